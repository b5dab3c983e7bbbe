"""The Tokenizer tab's "Train a BPE" panel: a corpus, a vocabulary size and a pre-tokenization pattern,
trained in a job with progress and Cancel. A finished BPE is handed to the tab with `trained`."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from app.state import AppState
from app.tabs.tokenizer.jobs import bpe_job
from app.worker import Job, JobRunner
from engine import BPETrainedEvent, Corpus, ProgressEvent, Tokenizer, corpus_names

CURRENT_CORPUS = "__current__"


class BpePanel(QGroupBox):
    """Public: corpus_combo, vocab_size, pattern, train_button, cancel_button, progress, status, train(),
    cancel(), training, job."""

    trained = Signal(object)  # the Tokenizer, once a run finished (not when cancelled or failed)
    message = Signal(str)  # a line for the status bar

    def __init__(self, state: AppState, runner: JobRunner):
        super().__init__("Train a BPE")
        self.state = state
        self.runner = runner
        self._job: Job | None = None
        self._cancelled = False
        self._result: Tokenizer | None = None
        self._seconds = 0.0
        self.corpus_combo = QComboBox()
        self.corpus_combo.setToolTip("Text the BPE learns its merges from")
        self.vocab_size = QSpinBox()
        self.vocab_size.setRange(257, 200_000)
        self.vocab_size.setSingleStep(256)
        self.vocab_size.setValue(1024)
        self.vocab_size.setToolTip("Number of tokens: the 256 bytes plus one new token per merge. GPT-2 has 50,257")
        self.pattern = QComboBox()
        self.pattern.addItem("GPT-2", "gpt2")
        self.pattern.addItem("GPT-4 (cl100k)", "cl100k")
        self.pattern.setToolTip("How text is pre-split before merging (words, numbers, spaces, punctuation); "
                                "merges never cross these pieces. GPT-4's keeps numbers to 3 digits.")
        self.train_button = QPushButton("Train BPE")
        self.train_button.setToolTip("Learn byte-pair merges on the corpus: the most frequent adjacent pair "
                                     "becomes a new token, again and again")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.status = QLabel("Trains in the background; the result appears among the encodings.")
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # shows tokenizer names, which may come from files
        self.status.setWordWrap(True)
        self.status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        form = QFormLayout()
        form.addRow("Corpus", self.corpus_combo)
        form.addRow("Vocab size", self.vocab_size)
        form.addRow("Pattern", self.pattern)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.fill_corpus_combo()

    @property
    def training(self) -> bool:
        return self._job is not None

    @property
    def job(self) -> Job | None:
        """The training job while it runs (its signals, for whoever wants to watch it)."""
        return self._job

    def fill_corpus_combo(self) -> None:
        current = self.corpus_combo.currentData()
        self.corpus_combo.blockSignals(True)
        self.corpus_combo.clear()
        if self.state.corpus is not None:
            self.corpus_combo.addItem(f"current corpus ({self.state.corpus.name})", CURRENT_CORPUS)
        for name in corpus_names():
            self.corpus_combo.addItem(name, name)
        index = self.corpus_combo.findData(current)
        self.corpus_combo.setCurrentIndex(max(0, index))
        self.corpus_combo.blockSignals(False)

    @Slot()
    def train(self) -> None:
        if self._job is not None:
            return
        choice = self.corpus_combo.currentData()
        corpus: Corpus | str = self.state.corpus if choice == CURRENT_CORPUS else choice
        if corpus is None:
            self.message.emit("Choose a corpus to train the BPE on.")
            return
        corpus_name = corpus.name if isinstance(corpus, Corpus) else corpus
        vocab = self.vocab_size.value()
        pattern = self.pattern.currentData()
        name = f"bpe-{vocab}-{pattern} {corpus_name}"
        self._cancelled = False
        self._result = None
        self._set_training(True)
        self.status.setText(f"Training {name}…")
        self._job = self.runner.start("tokenizer-bpe", bpe_job(corpus, vocab, pattern, name))
        self._job.events.connect(self._on_events)
        self._job.failed.connect(self._on_failed)
        self._job.finished.connect(self._on_finished)

    @Slot()
    def cancel(self) -> None:
        if self._job is None:
            return
        self._cancelled = True
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")
        self._job.stop()

    @Slot(list)
    def _on_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, ProgressEvent):
                if event.total > 0:
                    self.progress.setRange(0, 1000)
                    self.progress.setValue(int(1000 * min(1.0, event.done / event.total)))
                else:  # a stage that cannot tell how far it is: a busy bar
                    self.progress.setRange(0, 0)
                if event.message and not self._cancelled:
                    self.status.setText(event.message)
            elif isinstance(event, BPETrainedEvent):
                self._result = event.tokenizer
                self._seconds = event.seconds

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._result = None
        self.status.setText(f"Training failed: {message}")
        self.message.emit(f"BPE training failed: {message}")

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        self._set_training(False)
        if self._cancelled:
            self._result = None
            self.progress.setValue(0)
            self.status.setText("Cancelled: no tokenizer was made.")
            return
        tok, self._result = self._result, None
        if tok is None:
            self.progress.setValue(0)
            return
        self.progress.setValue(1000)
        self.status.setText(f"Trained {tok.name} ({tok.vocab_size:,} tokens) in {self._seconds:.1f} s.")
        self.trained.emit(tok)

    def _set_training(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        for w in (self.corpus_combo, self.vocab_size, self.pattern):
            w.setEnabled(not busy)
        self.progress.setRange(0, 1000)
        if busy:
            self.progress.setValue(0)
