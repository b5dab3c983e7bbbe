"""Attention tab: run the current model once on a text and look at every head's attention.

The big heatmap shows one layer and head (or the mean over a layer's heads, or the rollout across
layers) with the tokens on both axes; the overview grid shows every layer x head at once (click
one to open it); the text below is tinted by what a chosen query token attends to. With "over
training", the maps come from the probe text recorded at each evaluation of the last training
run, and a slider walks through the steps: heads can be watched forming.

The model runs in a job (jobs.py), never on the GUI thread; "over training" is the probe bar
(probes.py); the row that picks the mode, layer and head is view_controls.py; the text box with Run is
app/widgets/text_run_bar.py, shared with the Inside tab.
"""
from __future__ import annotations

import csv
import html
import io
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import dialogs, theme
from app.formatting import unknown_chars_note
from app.state import AppState
from app.tabs.attention.groups import kv_group_label, kv_heads
from app.tabs.attention.heatmap import AttentionHeatmap
from app.tabs.attention.jobs import AttentionResult, Maps, RolloutResult, attention_job
from app.tabs.attention.overview import MEAN, AttentionOverview, thumbnails
from app.tabs.attention.probes import ProbeBar
from app.tabs.attention.tokens import AttentionTextView
from app.tabs.attention.view_controls import MODE_MEAN, MODE_ROLLOUT, ViewControls
from app.widgets.text_run_bar import TextRunBar
from app.widgets.token_text import text_of_rendered
from app.worker import JobRunner, error_message
from engine import atomic_write_text, unknown_characters

JOB_NAME = "attention"
RUN_TOOLTIP = "Run the current model on the text and capture the attention of every head"
QUERY_HINT = "Click a token (here or a row of the heatmap) to see what it attends to."

class AttentionTab(QWidget):
    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self._job = None
        self._text_maps: Maps | None = None
        self._shown: Maps | None = None
        self._query = -1
        self._rerun_when_shown = False
        self._rerun_after_job = False
        self._stopping = False
        self._text_status = ""
        self._unknown_note = ""

        self._build_ui()
        self._update_controls()
        self._on_probes_changed()

        state.model_changed.connect(self._on_model_changed)
        state.attention_probes_changed.connect(self._on_probes_changed)

    # ------------------------------------------------------------ layout

    def _build_ui(self) -> None:
        self.bar = TextRunBar(self.state, "Text to run the model on…",
                              "The model reads this text once; every head's attention is shown below. Ctrl+Enter runs.",
                              RUN_TOOLTIP, height=80)
        self.text, self.run_button = self.bar.text, self.bar.run_button
        self.run_button.clicked.connect(self.on_run_clicked)
        self.bar.shortcut.activated.connect(self.run)

        self.controls = ViewControls()
        self.controls.changed.connect(self._refresh_views)
        self.controls.reset_button.clicked.connect(self._fit_map)
        self.controls.read_button.clicked.connect(self._read_tokens)
        self.controls.png_button.clicked.connect(self._ask_export_png)
        self.controls.csv_button.clicked.connect(self._ask_export_csv)

        self.probes = ProbeBar(self.state)
        self.probes.showing_changed.connect(self._on_source_changed)
        self.probes.probe_chosen.connect(self._show_probe)

        self.heatmap = AttentionHeatmap()
        self.heatmap.query_clicked.connect(self.set_query)
        self.overview = AttentionOverview()
        self.overview.cell_clicked.connect(self.open_cell)
        self.text_view = AttentionTextView()
        self.text_view.token_clicked.connect(self.set_query)
        self.query_label = QLabel(QUERY_HINT)
        self.query_label.setWordWrap(True)
        self.query_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        overview_box = QWidget()
        ov = QVBoxLayout(overview_box)
        ov.setContentsMargins(0, 0, 0, 0)
        ov.addWidget(_heading("All layers × heads"))
        ov.addWidget(self.overview, 1)
        text_box = QWidget()
        tv = QVBoxLayout(text_box)
        tv.setContentsMargins(0, 0, 0, 0)
        tv.addWidget(_heading("What one token attends to"))
        tv.addWidget(self.query_label)
        tv.addWidget(self.text_view, 1)
        self.right_splitter = right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(overview_box)
        right.addWidget(text_box)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.heatmap)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([700, 460])

        self.status = QLabel(" ")
        self.status.setWordWrap(True)
        self.status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout = QVBoxLayout(self)
        layout.addWidget(self.bar)
        layout.addWidget(self.controls)
        layout.addWidget(self.probes)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.status)

    # ------------------------------------------------------------ running the model

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def shown(self) -> Maps | None:
        """The maps on screen: the text's, or a training probe's."""
        return self._shown

    @property
    def text_maps(self) -> Maps | None:
        """The maps of the last run on the text box (None before one, or after a stopped run)."""
        return self._text_maps

    @Slot()
    def on_run_clicked(self) -> None:
        """The button runs the model, or stops the run in progress (a big model on a long text takes seconds)."""
        if self._job is None:
            self.run()
            return
        self._rerun_after_job = False
        self._stopping = True
        self._job.stop()
        self.run_button.setEnabled(False)
        self.status.setText("Stopping…")

    @Slot()
    def run(self) -> None:
        """Run the current model on the text box (in a job)."""
        if self._job is not None:
            return
        self._stopping = False
        model, tokenizer = self.state.model, self.state.tokenizer
        if model is None or tokenizer is None:
            self._notify("No model yet: train one in the Training tab or open a checkpoint.")
            return
        text = self.text.toPlainText()
        if not text.strip():
            self._notify("Type some text to run the model on.")
            return
        context = model.config.context_length
        # No token is shorter than one byte, so this cut never loses tokens that fit the context.
        ids = tokenizer.encode(text[: context * 64])
        truncated_from = len(ids) if len(ids) > context else 0
        ids = ids[:context]
        if not ids:
            self._notify("The text gave no tokens.")
            return
        unknown = unknown_characters(tokenizer, text[: context * 64])
        self._unknown_note = unknown_chars_note(unknown) if unknown else ""
        self.probes.show_probes(False)
        self._set_busy(True, f"Running the model on {len(ids):,} tokens…")
        self._job = self.runner.start(JOB_NAME, attention_job(model, tokenizer, ids, truncated_from))
        self._job.events.connect(self._on_job_events)
        self._job.failed.connect(self._on_job_failed)
        self._job.finished.connect(self._on_job_finished)

    @Slot(list)
    def _on_job_events(self, events: list) -> None:
        if self._stopping:
            return  # stopped by the user: what was already computed is dropped
        for event in events:
            if isinstance(event, AttentionResult):
                self._text_maps = Maps(event.maps, list(event.labels), list(event.pieces), event.thumbs,
                                       mosaic=event.mosaic, rollout_pending=True)
                if not self.probes.showing:
                    self._show(self._text_maps)
                T = event.maps.shape[-1]
                note = (f" (cut from {event.truncated_from:,} to the model's context of {T:,})"
                        if event.truncated_from else "")
                self._text_status = f"{T:,} tokens{note}. Hover the map for weights; scroll to zoom."
                self._show_text_status()
            elif isinstance(event, RolloutResult) and self._text_maps is not None:
                self._text_maps.rollout = event.rollout
                self._text_maps.rollout_pending = False
                if self._shown is self._text_maps and self.view_mode == MODE_ROLLOUT:
                    self._refresh_views()

    @Slot(str)
    def _on_job_failed(self, message: str) -> None:
        self._notify(f"Attention failed: {message}")

    @Slot()
    def _on_job_finished(self) -> None:
        self._job = None
        if self._stopping:
            self.status.setText("Stopped. Press Run to run the model on the text.")
        if self._text_maps is not None and self._text_maps.rollout_pending:  # the job failed or stopped
            self._text_maps.rollout_pending = False
        self._set_busy(False)
        if self._rerun_after_job:
            self._rerun_after_job = False
            self.run()

    def _show_text_status(self) -> None:
        """The last run's line, with a note (in the theme's warning colour) on characters the tokenizer lacks."""
        text = html.escape(self._text_status)
        if self._unknown_note:
            text += "<br>" + theme.colored(self._unknown_note + ": the maps show the tokens the model got", "warning")
        self.status.setText(text)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange and getattr(self, "_text_status", "") \
                and self._shown is self._text_maps and self._job is None:
            self._show_text_status()  # the note's colour follows the theme

    def _set_busy(self, busy: bool, message: str = "") -> None:
        self.run_button.setEnabled(True)
        self.run_button.setText("Stop" if busy else "Run")
        self.run_button.setToolTip("Stop this run" if busy else RUN_TOOLTIP)
        if message:
            self.status.setText(message)

    # ------------------------------------------------------------ showing maps

    def _show(self, maps: Maps | None) -> None:
        self._shown = maps
        if maps is None:
            self.heatmap.clear("Press Run to see the attention of the current model")
            self.overview.clear_maps()
            self.text_view.set_tokens([])
            self.query_label.setText(QUERY_HINT)  # nothing of the last text's query stays on screen
            self._update_controls()
            return
        L, H, T = maps.maps.shape[0], maps.maps.shape[1], maps.maps.shape[-1]
        self.controls.set_shape(L, H)
        shape = self.overview._shape
        self.overview.set_groups(*kv_heads(self.state.config))
        self.overview.set_thumbnails(maps.thumbs, maps.mosaic)
        if self.overview._shape != shape:
            self._fit_overview()
        if self.text_view.pieces != maps.pieces:
            self.text_view.set_tokens(maps.pieces)
            # The last token that isn't whitespace: it sees (nearly) the whole text.
            self._query = next((k for k in range(T - 1, -1, -1) if maps.pieces[k].strip()), T - 1)
        self._query = min(self._query, T - 1)
        self._update_controls()
        self._refresh_views()

    def _fit_overview(self) -> None:
        """Give the overview the height its grid needs (few layers: more room for the text), leaving the
        per-token text at least 40% (the cells shrink to fit; the text cannot)."""
        total = sum(self.right_splitter.sizes())
        if total <= 0:
            return
        want = self.overview.preferred_height() + 30  # + the heading
        top = max(total // 3, min(want, total * 3 // 5))
        self.right_splitter.setSizes([top, total - top])

    @property
    def view_mode(self) -> str:
        return self.controls.view_mode

    def current_matrix(self) -> np.ndarray | None:
        """The [T, T] matrix on the big heatmap."""
        if self._shown is None:
            return None
        maps = self._shown.maps
        if self.view_mode == MODE_ROLLOUT:
            return self._shown.get_rollout()
        layer = min(self.controls.layer.value(), maps.shape[0] - 1)
        if self.view_mode == MODE_MEAN:
            return maps[layer].mean(axis=0)
        return maps[layer, min(self.controls.head.value(), maps.shape[1] - 1)]

    def current_title(self) -> str:
        if self._shown is None:
            return ""
        L, H = self._shown.maps.shape[:2]
        if self.view_mode == MODE_ROLLOUT:
            title = f"Attention rollout through all {L} layers"
        elif self.view_mode == MODE_MEAN:
            title = f"Layer {self.controls.layer.value()} · mean over {H} heads"
        else:
            title = f"Layer {self.controls.layer.value()} · head {self.controls.head.value()}"
            group = kv_group_label(self.state.config, self.controls.head.value())
            if group:
                title += f" · {group}"
        if self._shown.step is not None:
            title += f" · training step {self._shown.step:,}"
        return title

    @Slot()
    def _refresh_views(self, *args: Any) -> None:
        self._update_controls()
        matrix = self.current_matrix()
        if matrix is None:
            if self._shown is not None:
                self.heatmap.clear("Computing the rollout…")
            return
        self.heatmap.set_matrix(matrix, self._shown.labels, self.current_title())
        if self.view_mode == MODE_ROLLOUT:
            self.overview.set_selected(None, None)
        else:
            head = MEAN if self.view_mode == MODE_MEAN else self.controls.head.value()
            self.overview.set_selected(self.controls.layer.value(), head)
        self._refresh_text_view(matrix)

    def _refresh_text_view(self, matrix: np.ndarray) -> None:
        q = self._query
        if not 0 <= q < matrix.shape[0]:
            self.text_view.set_query(-1, None)
            return
        self.text_view.set_query(q, matrix[q])
        row = matrix[q, : q + 1]
        top = int(np.argmax(row))
        pieces = self._shown.pieces
        self.query_label.setText(
            f"Query {q} <b>{_html(pieces[q])}</b> attends most to token {top} <b>{_html(pieces[top])}</b> "
            f"({row[top]:.2f}). Tint: darker = more attention. Click another token to change the query."
        )

    @Slot(int)
    def set_query(self, q: int) -> None:
        """Make token q the query of the per-token view."""
        self._query = q
        matrix = self.current_matrix()
        if matrix is not None:
            self._refresh_text_view(matrix)

    @Slot(int, int)
    def open_cell(self, layer: int, head: int) -> None:
        """Open one overview cell in the big view (head MEAN: the layer's mean over heads)."""
        self.controls.open(layer, None if head == MEAN else head)

    def _update_controls(self) -> None:
        self.controls.set_enabled_for(self._shown is not None)

    # ------------------------------------------------------------ attention over training

    @Slot()
    def _on_probes_changed(self) -> None:
        self.probes.refresh(show_if_idle=self._text_maps is None and self._job is None)

    @Slot(bool)
    def _on_source_changed(self, probes: bool) -> None:
        if not probes:
            self._show(self._text_maps)
            self.status.setText(" " if self._text_maps is None else
                                f"{self._text_maps.maps.shape[-1]:,} tokens of your text.")

    @Slot(object)
    def _show_probe(self, probe: Any) -> None:
        maps = np.asarray(probe.maps, dtype=np.float32)
        labels = [str(t) for t in probe.tokens]  # render_token strings: "\n" arrives escaped
        pieces = [text_of_rendered(t) for t in labels]
        self._show(Maps(maps, labels, pieces, thumbnails(maps), step=probe.step))
        self.status.setText(f"Probe text as the model saw it at training step {probe.step:,} "
                            f"({len(labels)} tokens). Untick \"Over training\" to go back to your text.")

    # ------------------------------------------------------------ reacting to the app

    @Slot()
    def _fit_map(self) -> None:
        self.heatmap.reset_zoom()

    @Slot()
    def _read_tokens(self) -> None:
        self.heatmap.zoom_to_read(self._query if self._query >= 0 else None)

    @Slot()
    def _on_model_changed(self) -> None:
        self.bar.update_default_text()
        self._text_maps = None
        self._text_status = ""
        self._unknown_note = ""
        if not self.probes.showing:
            self._show(None)
        if self.state.model is None:
            return
        if self._job is not None:
            self._rerun_after_job = True  # the running job has the old model's weights
        elif self.isVisible() and not self._other_jobs_running():
            self.run()
        else:
            self._rerun_when_shown = True

    def _other_jobs_running(self) -> bool:
        # Training runs the same model in another thread: leave it alone rather than compete for it.
        return any(job.name != JOB_NAME for job in self.runner.running())

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._shown is not None:
            QTimer.singleShot(0, self._fit_overview)  # sizes are only final once shown
        if self._rerun_when_shown and self._job is None and not self._other_jobs_running():
            self._rerun_when_shown = False
            QTimer.singleShot(0, self.run)

    # ------------------------------------------------------------ export

    def export_csv(self, path: str) -> None:
        """The matrix shown, rows = queries, columns = keys, labelled with the tokens."""
        matrix = self.current_matrix()
        if matrix is None:
            raise ValueError("nothing to export yet: run the model first")
        labels = self._shown.labels
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow([f"query \\ key ({self.current_title()})"] + labels)
        for q, row in enumerate(matrix):
            writer.writerow([labels[q]] + [f"{w:.6g}" for w in row])
        atomic_write_text(path, out.getvalue())  # a failure leaves an existing file as it was

    def export_png(self, path: str) -> None:
        if self.current_matrix() is None:
            raise ValueError("nothing to export yet: run the model first")
        self.heatmap.export_png(path)

    def _ask_export_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export heatmap", "attention.png", "PNG image (*.png)")
        if path:
            self._export(self.export_png, path)

    def _ask_export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export attention matrix", "attention.csv", "CSV (*.csv)")
        if path:
            self._export(self.export_csv, path)

    def _export(self, fn: Any, path: str) -> None:
        try:
            fn(path)
        except Exception as e:  # any failure is a message, never a crash of the window
            dialogs.show_warning(self, "Export failed", f"Could not save {path}: {error_message(e)}")
            return
        self._notify(f"Saved {path}")

    def _notify(self, message: str) -> None:
        self.status.setText(message)
        dialogs.notify(self, message, 8000)


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight: bold;")
    return label


def _html(s: str) -> str:
    return html.escape(repr(s))
