"""Inside tab: look inside the current model on a text — the logit lens, per-token surprise, attribution,
ablation and the embedding map — and, during and after a training run, how they changed over its evaluations.

One text box feeds every panel. Run computes the logit lens and the token losses in one job (one forward plus
a head matmul per block); the other panels start their own jobs from their buttons. Every job runs off the GUI
thread through the app's JobRunner (app/tabs/inside/session.py), one at a time, with the progress bar below
and a Stop button that ends it between steps. The engine side is engine/inspect (through `engine`'s API).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.state import AppState
from app.tabs.inside.ablation import AblationPanel
from app.tabs.inside.attribution import AttributionPanel
from app.tabs.inside.embedding_map import EmbeddingMapPanel
from app.tabs.inside.logit_lens import LensPanel
from app.tabs.inside.session import JOB_NAME, InsideSession, TextTokens
from app.tabs.inside.surprise import SurprisePanel
from app.widgets.text_run_bar import TextRunBar
from app.worker import JobRunner
from engine import LogitLens, run_logit_lens

LENS_TOP_K = 5
RUN_TOOLTIP = "Run the model on the text: the logit lens of every block and each token's loss (Ctrl+Enter)"


class InsideTab(QWidget):
    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.lens: LogitLens | None = None
        self._rerun_when_shown = False
        self.session = InsideSession(state, runner, lambda: self.text.toPlainText(), self)
        self._build_ui()
        self.session.busy_changed.connect(self._on_busy)
        self.session.progress.connect(self._on_progress)
        self.session.message.connect(self._notify)
        state.model_changed.connect(self._on_model_changed)
        state.attention_probes_changed.connect(self._on_probes_changed)
        self._on_model_changed()
        self._on_probes_changed()

    # ------------------------------------------------------------ layout

    def _build_ui(self) -> None:
        self.bar = TextRunBar(self.state, "Text to look inside the model with…",
                              "Every panel works on this text (cut to the model's context). Ctrl+Enter runs.",
                              RUN_TOOLTIP, height=70)
        self.text, self.run_button = self.bar.text, self.bar.run_button
        self.run_button.clicked.connect(self.run)
        self.bar.shortcut.activated.connect(self.run)

        render = self._render
        self.lens_panel = LensPanel()
        self.surprise_panel = SurprisePanel()
        self.attribution_panel = AttributionPanel(self.session, render)
        self.ablation_panel = AblationPanel(self.session, render)
        self.map_panel = EmbeddingMapPanel(self.session, render)
        self.panels = QTabWidget()
        self.panels.addTab(self.lens_panel, "Logit lens")
        self.panels.addTab(self.surprise_panel, "Surprise")
        self.panels.addTab(self.attribution_panel, "Attribution")
        self.panels.addTab(self.ablation_panel, "Ablation")
        self.panels.addTab(self.map_panel, "Embedding map")
        tips = ("What each block would predict if the model stopped there", "Each token tinted by its loss",
                "Which input tokens a prediction rests on", "Switch heads, attention or MLPs off",
                "The token embeddings and the residual stream in 2-D")
        for i, tip in enumerate(tips):
            self.panels.setTabToolTip(i, tip)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the analysis that is running (it ends between two steps)")
        self.stop_button.clicked.connect(self.session.stop)
        self.stop_button.hide()
        self.status = QLabel(" ")
        self.status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(self.stop_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.bar)
        layout.addWidget(self.panels, 1)
        layout.addLayout(bottom)

    def _render(self, token_id: int) -> str:
        tokenizer = self.state.tokenizer
        return tokenizer.render_token(int(token_id)) if tokenizer is not None else str(token_id)

    # ------------------------------------------------------------ running

    @property
    def busy(self) -> bool:
        return self.session.busy

    @Slot()
    def run(self) -> None:
        """The logit lens and token losses of the text box, in a job."""
        if self.session.busy:
            return
        tokens = self.session.tokens()
        if tokens is None:
            return
        if self.panels.currentWidget() not in (self.lens_panel, self.surprise_panel):
            self.panels.setCurrentWidget(self.lens_panel)
        job = run_logit_lens(self.state.model, list(tokens.ids), LENS_TOP_K)
        self.session.start(f"Logit lens on {len(tokens.ids):,} tokens…", job,
                           lambda result, tokens=tokens: self._show_lens(tokens, result))

    def _show_lens(self, tokens: TextTokens, lens: Any) -> None:
        if not isinstance(lens, LogitLens):
            return
        self.lens = lens
        vocab = self.state.config.vocab_size
        self.lens_panel.set_lens(lens, list(tokens.labels), self._render, vocab)
        self.surprise_panel.set_losses(list(tokens.pieces), list(tokens.labels), lens.token_loss, vocab)
        self.attribution_panel.set_tokens(tokens)
        cut = (f" (cut from {tokens.truncated_from:,} to the model's context)" if tokens.truncated_from else "")
        self._notify(f"{len(tokens.ids):,} tokens{cut}, {lens.top_ids.shape[0]} blocks. Hover a cell for the top "
                     f"{LENS_TOP_K}.")

    @Slot(bool)
    def _on_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.stop_button.setVisible(busy)
        for w in (self.run_button, self.attribution_panel.run_button, self.ablation_panel.ablate_button,
                  self.ablation_panel.sweep_button, self.map_panel.compute_button):
            w.setEnabled(not busy)
        if busy:
            self.progress.setRange(0, 0)
        elif self._rerun_when_shown and self.isVisible():
            self._rerun_when_shown = False
            QTimer.singleShot(0, self.run)

    @Slot(float, float, str)
    def _on_progress(self, done: float, total: float, message: str) -> None:
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
        else:
            self.progress.setRange(0, 0)
        if message:
            self.status.setText(message)

    # ------------------------------------------------------------ reacting to the app

    @Slot()
    def _on_model_changed(self) -> None:
        self.bar.update_default_text()
        self.lens = None
        config = self.state.config
        self.lens_panel.set_lens(None, [], self._render, 2)
        self.surprise_panel.set_losses([], [], None, config.vocab_size if config is not None else 2)
        self.attribution_panel.set_tokens(None)
        self.ablation_panel.clear_results()
        self.map_panel.clear()
        if config is None:
            return
        self.ablation_panel.set_model_shape(config.n_layers, config.n_heads)
        # Live: a new or retrained model is looked at again at once when the tab is on screen.
        if self.isVisible() and not self.session.busy and not self._other_jobs_running():
            QTimer.singleShot(0, self.run)
        else:
            self._rerun_when_shown = True

    def _other_jobs_running(self) -> bool:
        # Training runs in another thread: leave the CPU to it rather than start unasked work.
        return any(job.name != JOB_NAME for job in self.runner.running())

    @Slot()
    def _on_probes_changed(self) -> None:
        self.surprise_panel.set_probes(self.state.attention_probes)
        self.map_panel.set_probes(self.state.attention_probes)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self._rerun_when_shown and not self.session.busy and not self._other_jobs_running():
            self._rerun_when_shown = False
            QTimer.singleShot(0, self.run)

    def _notify(self, message: str) -> None:
        self.status.setText(message)
        dialogs.notify(self, message, 8000)
