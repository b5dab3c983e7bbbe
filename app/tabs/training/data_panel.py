"""The Training tab's data panel: the corpus (built-in, downloadable or a file) and the tokenizer.

Choosing a corpus loads it in a job and makes it the app's corpus (every tab uses it). The tokenizer
choice decides the model's vocab_size before a run: `vocab_size_known` says it as soon as it is known
(a char vocabulary from the corpus's distinct characters, a BPE's size, a named encoding's size from
the engine).

A named encoding needs its files from the network unless they are cached. When one is chosen the engine is
asked, in a job, whether it can be had (engine.tokenizer_problem: cached, or the download host answers);
those that cannot are shown disabled with the engine's reason, and Start says why before it is pressed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from app import dialogs
from app.jobs.model_io import CorpusLoadedEvent, open_corpus_job
from app.settings import Settings
from app.state import AppState
from app.tabs.training.boxes import group_box
from app.worker import Job, JobRunner
from engine import (
    BUILTIN_CORPORA,
    NAMED_ENCODINGS,
    Corpus,
    Event,
    ProgressEvent,
    Tokenizer,
    corpus_names,
    named_vocab_size,
    tokenizer_problem,
)

OPEN_FILE = "\x00open-file"  # corpus combo item that opens a file dialog
CURRENT = "\x00current"  # tokenizer combo item: the current model's tokenizer
PENDING = "\x00pending"  # tokenizer combo item: the one the Tokenizer tab handed over
BPE_SIZES = (256 + 256, 1024, 2048, 4096, 8192)
UNAVAILABLE = " — unavailable"


@dataclass(frozen=True)
class TokenizersChecked(Event):
    """Each named encoding's problem (None: usable), as the engine sees it now."""

    problems: dict[str, str | None]


def check_named_job(chosen: str) -> Iterator[Event]:
    """Ask the network about the chosen encoding only (one HEAD request at most); the others are judged from
    the cache and from what that answer taught the engine."""
    problems = {chosen: tokenizer_problem(chosen)}
    problems.update({name: tokenizer_problem(name, connect=False) for name in NAMED_ENCODINGS if name != chosen})
    yield TokenizersChecked(problems)


class DataPanel(QWidget):
    """Corpus and tokenizer. Public: corpus_combo, tokenizer_combo, select_corpus(), add_corpus_file(),
    corpus_ready, run_corpus(), run_tokenizer()."""

    changed = Signal()  # the corpus became ready or failed, or the tokenizer choice (or its availability) changed
    vocab_size_known = Signal(int)  # the vocabulary the chosen tokenizer gives

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self._fine_tune = False
        self._corpus_job: Job | None = None
        self._corpus_wanted: str | None = None
        self._corpus_chars: dict[str, int] = {}  # source -> distinct characters (char vocab estimate)
        self._unavailable: dict[str, str] = {}  # named encoding -> why it cannot be used (the engine's words)

        self.corpus_combo = QComboBox()
        self.corpus_combo.setToolTip("The text to learn from: a built-in corpus (works offline), or your own "
                                     "file (Open file…, or drop it on the window)")
        for name in corpus_names():
            self.corpus_combo.addItem(name, name)
            spec = BUILTIN_CORPORA.get(name)
            if spec is not None:
                self.corpus_combo.setItemData(self.corpus_combo.count() - 1, spec.description,
                                              Qt.ItemDataRole.ToolTipRole)
        self.corpus_combo.insertSeparator(self.corpus_combo.count())
        self.corpus_combo.addItem("Open file…", OPEN_FILE)
        self.corpus_info = QLabel("")
        self.corpus_info.setTextFormat(Qt.TextFormat.PlainText)  # names and text from files
        self.corpus_info.setObjectName("mutedLabel")
        self.corpus_info.setWordWrap(True)
        self.tokenizer_combo = QComboBox()
        self.tokenizer_combo.setToolTip(
            "How text becomes tokens. char: one token per character (tiny vocabulary, long sequences).\n"
            "BPE: byte-pair encoding trained on the corpus first (common words become one token).\n"
            "Named encodings are OpenAI's (downloaded once, then offline).")
        self._fill_tokenizer_combo()
        self.tokenizer_info = QLabel("")
        self.tokenizer_info.setTextFormat(Qt.TextFormat.PlainText)
        self.tokenizer_info.setObjectName("mutedLabel")
        self.tokenizer_info.setWordWrap(True)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Corpus", self.corpus_combo)
        form.addRow("", self.corpus_info)
        form.addRow("Tokenizer", self.tokenizer_combo)
        form.addRow("", self.tokenizer_info)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(group_box("Data", form))

        self.corpus_combo.activated.connect(self._on_corpus_activated)
        self.tokenizer_combo.currentIndexChanged.connect(self._on_tokenizer_choice)
        state.tokenizer_changed.connect(self._on_tokenizers_changed)
        state.pending_tokenizer_changed.connect(self._on_pending_tokenizer)
        state.corpus_changed.connect(self._on_state_corpus_changed)

    # ================================================================== what a run uses

    def problem(self) -> str | None:
        if not self.corpus_combo.currentData() or self.corpus_combo.currentData() == OPEN_FILE:
            return "choose a corpus"
        reason = self._unavailable.get(self.tokenizer_choice())
        if reason and not self._fine_tune:
            return f"the tokenizer {reason}"
        return None

    def tokenizer_unavailable(self, spec: str) -> str | None:
        """Why a choice of the tokenizer list cannot be used, as far as is known now (None: it can)."""
        return self._unavailable.get(spec)

    @property
    def corpus_ready(self) -> bool:
        """The chosen corpus is loaded (Start will not have to read it)."""
        corpus = self.state.corpus
        return corpus is not None and (corpus.source or corpus.name) == self.corpus_combo.currentData()

    def run_corpus(self) -> Corpus | str:
        """The loaded corpus when it is the chosen one, else its name or path (the run loads it)."""
        return self.state.corpus if self.corpus_ready else self.corpus_combo.currentData()

    def tokenizer_choice(self) -> str:
        return self.tokenizer_combo.currentData() or "char"

    def run_tokenizer(self) -> Tokenizer | str:
        """A ready tokenizer (the current model's, or the Tokenizer tab's), else a spec to build."""
        choice = self.tokenizer_choice()
        if self._fine_tune or choice == CURRENT:
            return self.state.tokenizer
        if choice == PENDING:
            return self.state.pending_tokenizer
        return choice

    def command_data(self) -> tuple[str, Tokenizer | str | None]:
        """(corpus, tokenizer) for the exported command line: a spec, or the app's own tokenizer (the Export
        command writes it to a file)."""
        corpus = self.corpus_combo.currentData()
        return (corpus if corpus and corpus != OPEN_FILE else "python-docs", self.run_tokenizer())

    def set_fine_tune(self, fine_tune: bool) -> None:
        """Fine-tuning keeps the current model's tokenizer."""
        self._fine_tune = fine_tune
        if fine_tune:
            self._fill_tokenizer_combo()
            self.tokenizer_combo.setCurrentIndex(self.tokenizer_combo.findData(CURRENT))
            self.tokenizer_combo.setEnabled(False)
            self.tokenizer_info.setText("fine-tuning keeps the model's tokenizer")
        else:
            self.tokenizer_combo.setEnabled(True)
            if self.tokenizer_combo.currentData() == CURRENT:
                self.tokenizer_combo.setCurrentIndex(0)
            self._update_vocab_estimate()

    def show_opened_run(self, train_state: dict) -> list[str]:
        """A model opened from a file: its corpus and its (current) tokenizer; notes on what could not be shown.

        Only a built-in corpus is loaded. A stored path is never read when a file is opened (it could name
        anything, /dev/zero included): a regular file or folder is offered in the corpus list instead, and
        read only when chosen."""
        notes = []
        source = train_state.get("corpus")
        if isinstance(source, str) and source:
            if source in corpus_names():
                self._select_corpus(source)
                self._load_corpus(source)
            else:
                try:
                    usable = Path(source).is_file() or Path(source).is_dir()  # stat only: nothing is opened
                except (OSError, ValueError):
                    usable = False
                name = Path(source).name or source
                if usable:
                    self._add_corpus_item(str(Path(source).resolve()))
                    notes.append(f"it was trained on {name}, listed under Corpus (read only when you choose it)")
                else:
                    notes.append(f"the corpus it was trained on ({source[:200]}) is not a file or folder here")
        self._fill_tokenizer_combo()
        self.tokenizer_combo.setCurrentIndex(max(0, self.tokenizer_combo.findData(CURRENT)))
        return notes

    # ================================================================== settings

    def restore_settings(self, s: Settings) -> None:
        spec = s.value("training/tokenizer", "char")
        index = self.tokenizer_combo.findData(spec)
        self.tokenizer_combo.setCurrentIndex(index if index >= 0 else 0)
        files = s.value("training/corpus_files", "")
        for path in filter(None, files.split("\n") if isinstance(files, str) else []):
            if Path(path).exists():
                self._add_corpus_item(path)
        corpus = s.value("training/corpus", "python-docs")
        index = self.corpus_combo.findData(corpus)
        self.corpus_combo.setCurrentIndex(index if index >= 0 else 0)

    def load_chosen_corpus(self) -> None:
        self._load_corpus(self.corpus_combo.currentData())

    def save_settings(self, s: Settings) -> None:
        spec = self.tokenizer_combo.currentData()
        if isinstance(spec, str) and not spec.startswith("\x00"):
            s.set_value("training/tokenizer", spec)
        corpus = self.corpus_combo.currentData()
        if corpus and corpus != OPEN_FILE:
            s.set_value("training/corpus", corpus)
        files = [self.corpus_combo.itemData(i) for i in range(self.corpus_combo.count())]
        s.set_value("training/corpus_files", "\n".join(f for f in files if f and f not in BUILTIN_CORPORA
                                                        and f != OPEN_FILE and Path(f).exists()))

    # ================================================================== corpus

    def _add_corpus_item(self, path: str) -> int:
        index = self.corpus_combo.findData(path)
        if index >= 0:
            return index
        at = self.corpus_combo.findData(OPEN_FILE) - 1  # before the separator
        self.corpus_combo.insertItem(at, Path(path).name, path)
        self.corpus_combo.setItemData(at, path, Qt.ItemDataRole.ToolTipRole)
        return at

    def add_corpus_file(self, path: str | Path) -> None:
        """Use a text file (or folder) as the corpus: Open file…, or dropped on the window."""
        path = str(Path(path).resolve())
        self.corpus_combo.setCurrentIndex(self._add_corpus_item(path))
        self._load_corpus(path)

    def select_corpus(self, source: str) -> None:
        """Use a built-in corpus by name (or an already listed file) as the corpus."""
        index = self.corpus_combo.findData(source)
        if index < 0:
            self.add_corpus_file(source)
            return
        self.corpus_combo.setCurrentIndex(index)
        self._load_corpus(source)

    @Slot(int)
    def _on_corpus_activated(self, index: int) -> None:
        source = self.corpus_combo.itemData(index)
        if source == OPEN_FILE:
            path = dialogs.open_file(self, "Open a text file as the corpus", dialogs.TEXT_FILTER)
            if path:
                self.add_corpus_file(path)
            else:
                self._select_corpus(self._corpus_wanted)
            return
        self._load_corpus(source)

    def _select_corpus(self, source: str | None) -> None:
        index = self.corpus_combo.findData(source) if source else -1
        self.corpus_combo.setCurrentIndex(index if index >= 0 else 0)

    def _load_corpus(self, source: str | None) -> None:
        if not source or source == OPEN_FILE:
            return
        self._corpus_wanted = source
        corpus = self.state.corpus
        if corpus is not None and (corpus.source or corpus.name) == source:
            self._show_corpus_info()
            return
        self.corpus_info.setText("Loading…")
        job = self.runner.start("corpus", open_corpus_job(source))
        job.events.connect(self._on_corpus_events)
        job.failed.connect(self._on_corpus_failed)
        self._corpus_job = job

    @Slot(list)
    def _on_corpus_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, ProgressEvent) and 0 < event.done < event.total:
                self.corpus_info.setText(f"Loading… {100 * event.done / event.total:.0f}%")  # a download
            elif isinstance(event, CorpusLoadedEvent):
                source = event.corpus.source or event.corpus.name
                self._corpus_chars[source] = event.distinct_chars
                if source == self._corpus_wanted:
                    self.state.set_corpus(event.corpus)

    @Slot(str)
    def _on_corpus_failed(self, message: str) -> None:
        self.corpus_info.setText("")
        dialogs.show_error(self, "Cannot use this corpus", message)
        # Back to the corpus in use, and forget a file that failed.
        bad = self._corpus_wanted
        if bad and bad not in BUILTIN_CORPORA:
            index = self.corpus_combo.findData(bad)
            if index >= 0:
                self.corpus_combo.removeItem(index)
        current = self.state.corpus
        self._corpus_wanted = (current.source or current.name) if current else None
        self._select_corpus(self._corpus_wanted)
        self.changed.emit()

    @Slot()
    def _on_state_corpus_changed(self) -> None:
        corpus = self.state.corpus
        if corpus is None:
            return
        source = corpus.source or corpus.name
        if source != self.corpus_combo.currentData():
            index = self.corpus_combo.findData(source)
            if index < 0 and Path(source).exists():
                index = self._add_corpus_item(source)
            if index >= 0:
                self.corpus_combo.setCurrentIndex(index)
        self._corpus_wanted = source
        self._show_corpus_info()
        self._update_vocab_estimate()
        self.changed.emit()

    def _show_corpus_info(self) -> None:
        corpus = self.state.corpus
        if corpus is None:
            return
        docs = len(corpus.documents)
        text = f"{corpus.num_chars:,} characters" + (f" in {docs:,} documents" if docs > 1 else "")
        if corpus.description:
            text += f" · {corpus.description}"
        self.corpus_info.setText(text)
        self.corpus_info.setToolTip(corpus.sample_passage(300))

    # ================================================================== tokenizer

    def _fill_tokenizer_combo(self) -> None:
        combo = self.tokenizer_combo
        previous = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("Characters (char)", "char")
        for size in BPE_SIZES:
            combo.addItem(f"BPE trained on the corpus, {size:,} tokens", f"bpe:{size}")
        for name, spec in NAMED_ENCODINGS.items():
            combo.addItem(f"{name} — {spec.description}", name)
        if self.state.tokenizer is not None:
            combo.addItem(f"Current model's: {self.state.tokenizer.describe()}", CURRENT)
        if self.state.pending_tokenizer is not None:
            combo.addItem(f"From the Tokenizer tab: {self.state.pending_tokenizer.describe()}", PENDING)
        index = combo.findData(previous) if previous is not None else 0
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)
        self._show_availability()

    def _show_availability(self) -> None:
        """Disable the named encodings the engine says cannot be had, with its reason as their tooltip."""
        combo = self.tokenizer_combo
        model = combo.model()
        for name, spec in NAMED_ENCODINGS.items():
            index = combo.findData(name)
            if index < 0 or not isinstance(model, QStandardItemModel):
                continue
            reason = self._unavailable.get(name)
            item = model.item(index)
            item.setEnabled(reason is None)
            item.setText(f"{name} — {spec.description}" + (UNAVAILABLE if reason else ""))
            item.setToolTip(reason or "downloaded once (needs the network the first time), then offline")

    def _check_named(self, name: str) -> None:
        if self.runner.running("tokenizer-check"):
            return
        job = self.runner.start("tokenizer-check", check_named_job(name))
        job.events.connect(self._on_check_events)

    @Slot(list)
    def _on_check_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, TokenizersChecked):
                self._unavailable = {name: reason for name, reason in event.problems.items() if reason}
                self._show_availability()
                self._update_vocab_estimate()
                self.changed.emit()

    @Slot()
    def _on_tokenizers_changed(self) -> None:
        self._fill_tokenizer_combo()
        self._update_vocab_estimate()

    @Slot()
    def _on_pending_tokenizer(self) -> None:
        self._fill_tokenizer_combo()
        if self.state.pending_tokenizer is not None and not self._fine_tune:
            self.tokenizer_combo.setCurrentIndex(self.tokenizer_combo.findData(PENDING))
        self._update_vocab_estimate()

    @Slot(int)
    def _on_tokenizer_choice(self, _index: int) -> None:
        choice = self.tokenizer_choice()
        if choice in NAMED_ENCODINGS and choice not in self._unavailable:
            self._check_named(choice)
        self._update_vocab_estimate()
        self.changed.emit()

    def _update_vocab_estimate(self) -> None:
        """vocab_size follows the tokenizer; for a char tokenizer, the corpus's distinct characters + 1."""
        choice = self.tokenizer_choice()
        vocab, info = None, ""
        if choice == CURRENT and self.state.tokenizer is not None:
            vocab = self.state.tokenizer.vocab_size
        elif choice == PENDING and self.state.pending_tokenizer is not None:
            vocab = self.state.pending_tokenizer.vocab_size
        elif choice == "char":
            corpus = self.state.corpus
            if corpus is not None:
                source = corpus.source or corpus.name
                distinct = self._corpus_chars.get(source)
                if distinct is None:
                    distinct = len(set(corpus.text()))
                    self._corpus_chars[source] = distinct
                vocab = distinct + 1  # + the id for characters the corpus never had
            info = "one token per character of the corpus"
        elif choice.startswith("bpe:"):
            vocab = int(choice.split(":", 1)[1])
            info = "trained on the corpus when you press Start (a few seconds)"
        elif choice in NAMED_ENCODINGS:
            vocab = named_vocab_size(choice)
            reason = self._unavailable.get(choice)
            info = (f"unavailable: {reason}" if reason
                    else "downloaded once (needs the network the first time), then offline")
        self.tokenizer_info.setText(info)
        if vocab is not None:
            self.vocab_size_known.emit(vocab)
