"""The Tokenizer tab's merges page: pick a BPE, list its merges (recovered in a job for a big vocabulary),
and hand a BPE trained here to the Training tab for the next model."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QPalette, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QLabel, QPushButton, QVBoxLayout, QWidget

from app.state import AppState
from app.tabs.tokenizer.merges import MergesListed, MergesView, merges_job
from app.worker import Job, JobRunner
from engine import Tokenizer


class MergesPanel(QWidget):
    """Public: merges_of, merges, use_button, use_status, set_choices, merges_tokenizer, use_for_next_model."""

    message = Signal(str)  # a line for the user

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self._trained: list[Tokenizer] = []  # the BPEs trained in the tab: only these can be handed over
        self._merge_items: list[tuple[str, Tokenizer]] = []
        self._merge_rows: dict[int, tuple] = {}  # id(tokenizer) -> (tokenizer, its merges as rows), listed once
        self._merges_job: Job | None = None
        self.merges_of = QComboBox()
        self.merges_of.setToolTip("Whose merges to list")
        self.merges_of.currentIndexChanged.connect(self._show_merges)
        self.merges = MergesView()
        self.use_button = QPushButton("Use for the next model")
        self.use_button.setToolTip("The Training tab will build its next model from scratch with this tokenizer")
        self.use_button.clicked.connect(self.use_for_next_model)
        self.use_status = QLabel()
        self.use_status.setTextFormat(Qt.TextFormat.PlainText)
        self.use_status.setWordWrap(True)
        self.use_status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout = QVBoxLayout(self)
        layout.addWidget(self.merges_of)
        layout.addWidget(self.merges, 1)
        layout.addWidget(self.use_button)
        layout.addWidget(self.use_status)
        state.pending_tokenizer_changed.connect(self._update_use_button)
        self._update_use_button()

    def set_choices(self, choices: list[tuple[str, Tokenizer]], unavailable: list[tuple[str, str]],
                    trained: list[Tokenizer], select: Tokenizer | None = None) -> None:
        """The BPEs to offer (label, tokenizer), the encodings that could not load (name, reason: offered
        disabled), the ones trained in the tab, and which to select (None: keep the current one)."""
        previous = self.merges_tokenizer() if select is None else select
        self._trained = trained
        self._merge_items = choices
        self.merges_of.blockSignals(True)
        self.merges_of.clear()
        for label, _ in choices:
            self.merges_of.addItem(label)
        if not choices:
            self.merges_of.addItem("No BPE to list yet")  # a plain entry: never a disabled one as the choice
        items: QStandardItemModel = self.merges_of.model()
        for name, reason in unavailable:
            self.merges_of.addItem(f"{name} (unavailable)")
            item = items.item(self.merges_of.count() - 1)
            item.setEnabled(False)
            item.setToolTip(f"{name} is unavailable: {reason or 'it could not be loaded'}")
        index = next((i for i, (_, tok) in enumerate(choices) if tok is previous), 0)
        self.merges_of.setCurrentIndex(index)
        self.merges_of.blockSignals(False)
        self._show_merges()

    def merges_tokenizer(self) -> Tokenizer | None:
        """The tokenizer whose merges are listed."""
        i = self.merges_of.currentIndex()
        return self._merge_items[i][1] if 0 <= i < len(self._merge_items) else None

    @Slot()
    def _show_merges(self, *args: Any) -> None:
        """List the chosen tokenizer's merges; recovering them for a big vocabulary runs in a job."""
        tok = self.merges_tokenizer()
        self._update_use_button()
        if tok is None:
            self.merges.set_rows(None, "No BPE yet: train one above.")
            return
        rows = self._merge_rows.get(id(tok))
        if rows is not None:
            self.merges.set_rows(rows[1])
            return
        self.merges.set_rows(None, f"Listing the merges of {tok.name}…")
        if self._merges_job is not None:
            self._merges_job.stop()  # listing another tokenizer's: no longer wanted
        self._merges_job = job = self.runner.start("tokenizer-merges", merges_job(tok))
        job.events.connect(self._on_merges_events)
        job.failed.connect(self._on_merges_failed)
        job.finished.connect(self._on_merges_finished)

    @Slot(list)
    def _on_merges_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, MergesListed):
                # keyed by id, holding the tokenizer so the id stays its own
                self._merge_rows[id(event.tokenizer)] = (event.tokenizer, event.rows)
                if event.tokenizer is self.merges_tokenizer():
                    self.merges.set_rows(event.rows)

    @Slot(str)
    def _on_merges_failed(self, message: str) -> None:
        if self.sender() is self._merges_job:
            tok = self.merges_tokenizer()
            self.merges.set_rows(None, f"No merges to list for {tok.name if tok else 'this tokenizer'}: {message}")

    @Slot()
    def _on_merges_finished(self) -> None:
        if self.sender() is self._merges_job:
            self._merges_job = None

    def selected_trained(self) -> Tokenizer | None:
        tok = self.merges_tokenizer()
        return tok if tok is not None and any(tok is t for t in self._trained) else None

    @Slot()
    def use_for_next_model(self) -> None:
        tok = self.selected_trained()
        if tok is None:
            return
        self.state.set_pending_tokenizer(tok)
        self.message.emit(f"The next model trained from scratch will use {tok.name}.")

    @Slot()
    def _update_use_button(self) -> None:
        tok = self.selected_trained()
        self.use_button.setEnabled(tok is not None)
        pending = self.state.pending_tokenizer
        if pending is not None:
            self.use_status.setText(f"Next model's tokenizer: {pending.name} (set in the Training tab)")
        else:
            self.use_status.setText("Select a BPE trained here to use it for the next model.")
