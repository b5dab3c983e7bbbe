"""The Training tab: choose a model shape, data and settings, press Start, watch it learn.

Left: the settings (start from, model, data, training). Right: Start / Pause / Stop with progress,
the live plots and the latest sample. A run is one TrainingJob in the JobRunner; its events only
append to plot buffers and update a few labels. When the run ends, its model becomes the app's
current model (with its training history, so Save keeps the curves).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.formatting import format_si
from app.jobs.model_io import DEFAULT_MODEL, CorpusLoadedEvent, load_corpus_job
from app.jobs.training import PreparedEvent, TrainingJob
from app.settings import Settings
from app.state import AppState
from app.tabs.training.command_dialog import TorchrunDialog
from app.tabs.training.loss_plot import TrainingPlots
from app.tabs.training.model_form import ModelForm
from app.tabs.training.torchrun import Launch, torchrun_command  # noqa: F401  (torchrun_command is part of this tab's API)
from app.tabs.training.train_form import TrainSettingsForm
from app.theme import mono_font
from app.worker import Job, JobRunner
from engine import (
    BUILTIN_CORPORA,
    NAMED_ENCODINGS,
    AttentionProbeEvent,
    ErrorEvent,
    EvalEvent,
    FinishedEvent,
    ModelConfig,
    ProgressEvent,
    RunSpec,
    SampleEvent,
    StartedEvent,
    StepEvent,
    TrainConfig,
    corpus_names,
)

OPEN_FILE = "\x00open-file"  # corpus combo item that opens a file dialog
CURRENT = "\x00current"  # tokenizer combo item: the current model's tokenizer
PENDING = "\x00pending"  # tokenizer combo item: the one the Tokenizer tab handed over
BPE_SIZES = (256 + 256, 1024, 2048, 4096, 8192)
STATS_INTERVAL_S = 0.25  # how often the progress bar and the throughput line change while training
KNOWN_VOCAB = {"gpt2": 50257, "r50k_base": 50257, "p50k_base": 50281, "cl100k_base": 100277, "o200k_base": 200019}


def _named_encodings() -> list[tuple[str, str]]:
    return [(name, spec.description) for name, spec in NAMED_ENCODINGS.items()]


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingTab(QWidget):
    """See the module docstring. Public for tests and the window: start(), pause(), resume(), stop(),
    stop_now(), add_corpus_file(), plots, model_form, train_form, corpus_combo, tokenizer_combo."""

    device_changed = Signal(str)  # the device setting ("auto", "cpu", ...), for the status bar
    running_changed = Signal(bool)

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self._job: Job | None = None
        self._training: TrainingJob | None = None
        self._last_training: TrainingJob | None = None  # its optimizer goes into Save
        self._run = None
        self._run_count = 0
        self._adopting = False
        self._adopted = False
        self._stopping = False
        self._pending_step = None  # the latest step event not shown yet (see _on_events)
        self._step_shown_at = 0.0
        self._corpus_job: Job | None = None
        self._corpus_wanted: str | None = None
        self._corpus_chars: dict[str, int] = {}  # source -> distinct characters (char vocab estimate)
        self._named_vocab: dict[str, int] = dict(KNOWN_VOCAB)
        self._build_ui()
        self._connect()
        self._restore_settings()
        self._refresh_fine_tune_option()
        self._update_controls()

    # ================================================================== UI

    def _build_ui(self) -> None:
        # ---- left: settings, in a scroll area so small screens still reach everything
        self.scratch_radio = QRadioButton("Scratch")
        self.scratch_radio.setToolTip("Pretraining: new random weights with the shape below")
        self.finetune_radio = QRadioButton("Current model")
        self.finetune_radio.setToolTip("Fine-tuning: keep training the current model's weights (its shape and "
                                       "tokenizer stay); use a lower learning rate")
        self.scratch_radio.setChecked(True)
        self.start_group = QButtonGroup(self)
        self.start_group.addButton(self.scratch_radio)
        self.start_group.addButton(self.finetune_radio)
        start_row = QHBoxLayout()
        start_row.addWidget(self.scratch_radio)
        start_row.addWidget(self.finetune_radio)
        start_row.addStretch(1)
        start_box = self._group("Start from", start_row)

        self.model_form = ModelForm()
        model_box = self._group("Model", self.model_form)

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
        self.corpus_info.setObjectName("mutedLabel")
        self.corpus_info.setWordWrap(True)
        self.tokenizer_combo = QComboBox()
        self.tokenizer_combo.setToolTip(
            "How text becomes tokens. char: one token per character (tiny vocabulary, long sequences).\n"
            "BPE: byte-pair encoding trained on the corpus first (common words become one token).\n"
            "Named encodings are OpenAI's (downloaded once, then offline).")
        self._fill_tokenizer_combo()
        self.tokenizer_info = QLabel("")
        self.tokenizer_info.setObjectName("mutedLabel")
        self.tokenizer_info.setWordWrap(True)
        data_form = QFormLayout()
        data_form.setContentsMargins(0, 0, 0, 0)
        data_form.addRow("Corpus", self.corpus_combo)
        data_form.addRow("", self.corpus_info)
        data_form.addRow("Tokenizer", self.tokenizer_combo)
        data_form.addRow("", self.tokenizer_info)
        data_box = self._group("Data", data_form)

        self.train_form = TrainSettingsForm()
        train_box = self._group("Training", self.train_form)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 10, 6)
        for box in (start_box, model_box, data_box, train_box):
            left_layout.addWidget(box)
        left_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Wide enough for the forms and the scroll bar: nothing is cut off at the right.
        scroll.setMinimumWidth(max(340, left.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()))
        self.settings_scroll = scroll

        # ---- right: controls, progress, plots, sample
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("primaryButton")
        self.start_button.setToolTip("Train with these settings (the app keeps working meanwhile)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold training after the current step; Resume goes on exactly")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the run after the current step, with a last evaluation; "
                                    "the model trained so far becomes the current model")
        self.command_button = QPushButton("Export command…")
        self.command_button.setToolTip("The torchrun command that runs this training on one or more GPUs / "
                                       "machines, to copy to a cluster")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Ready")
        self.progress.setTextVisible(True)
        self.progress.setMinimumWidth(220)
        self.stats_label = QLabel("")
        self.stats_label.setObjectName("statsLabel")
        self.stats_label.setTextFormat(Qt.TextFormat.RichText)
        self.stats_label.setToolTip("Throughput, model FLOPs utilisation (share of the device's measured peak "
                                    "spent on the model's math) and the latest losses")
        self.message_label = QLabel("")
        self.message_label.setObjectName("mutedLabel")
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.stop_button)
        buttons.addSpacing(10)
        buttons.addWidget(self.progress, 1)
        buttons.addSpacing(10)
        buttons.addWidget(self.command_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.stats_label)
        status_row.addStretch(1)
        status_row.addWidget(self.message_label, 1)

        self.plots = TrainingPlots()
        self.sample_text = QPlainTextEdit()
        self.sample_text.setReadOnly(True)
        self.sample_text.setFont(mono_font())
        self.sample_text.setPlaceholderText("Text the model writes at each evaluation appears here: first noise, "
                                            "then words, then something like the corpus.")
        self.sample_text.setMinimumHeight(70)
        self.sample_title = QLabel("Latest sample")
        self.sample_title.setObjectName("sectionTitle")
        sample_box = QWidget()
        sample_layout = QVBoxLayout(sample_box)
        sample_layout.setContentsMargins(0, 4, 0, 0)
        sample_layout.addWidget(self.sample_title)
        sample_layout.addWidget(self.sample_text)

        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.plots)
        self.right_splitter.addWidget(sample_box)
        self.right_splitter.setStretchFactor(0, 4)
        self.right_splitter.setStretchFactor(1, 1)
        self.right_splitter.setChildrenCollapsible(False)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 6, 6, 6)
        right_layout.addLayout(buttons)
        right_layout.addLayout(status_row)
        right_layout.addWidget(self.right_splitter, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(scroll)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([scroll.minimumWidth(), 1000])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

    @staticmethod
    def _group(title: str, content: QWidget | Any) -> QGroupBox:
        box = QGroupBox(title)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(8, 6, 8, 8)
        if isinstance(content, QWidget):
            layout.addWidget(content)
        else:
            layout.addLayout(content)
        return box

    def _fill_tokenizer_combo(self) -> None:
        combo = self.tokenizer_combo
        previous = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("Characters (char)", "char")
        for size in BPE_SIZES:
            combo.addItem(f"BPE trained on the corpus, {size:,} tokens", f"bpe:{size}")
        for name, description in _named_encodings():
            combo.addItem(f"{name} — {description}", name)
        if self.state.tokenizer is not None:
            combo.addItem(f"Current model's: {self.state.tokenizer.describe()}", CURRENT)
        if self.state.pending_tokenizer is not None:
            combo.addItem(f"From the Tokenizer tab: {self.state.pending_tokenizer.describe()}", PENDING)
        index = combo.findData(previous) if previous is not None else 0
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)

    def _connect(self) -> None:
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self._toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        self.command_button.clicked.connect(self.show_command)
        self.model_form.config_changed.connect(self._on_form_changed)
        self.train_form.changed.connect(self._on_form_changed)
        self.train_form.device.currentTextChanged.connect(self.device_changed)
        self.corpus_combo.activated.connect(self._on_corpus_activated)
        self.tokenizer_combo.currentIndexChanged.connect(self._on_tokenizer_choice)
        self.start_group.buttonToggled.connect(self._on_start_from_toggled)
        self.state.model_changed.connect(self._on_model_changed)
        self.state.tokenizer_changed.connect(self._on_tokenizers_changed)
        self.state.pending_tokenizer_changed.connect(self._on_pending_tokenizer)
        self.state.corpus_changed.connect(self._on_state_corpus_changed)

    # ================================================================== settings

    def _restore_settings(self) -> None:
        s = Settings()
        preset = s.value("training/preset", "tiny")
        config = s.value("training/model_config", "")
        if config:
            try:
                import json
                self.model_form.set_config(ModelConfig.from_dict(json.loads(config)))
            except (ValueError, TypeError):
                pass
        elif preset:
            self.model_form.preset_combo.setCurrentText(preset)
        train = s.value("training/train_config", "")
        if train:
            try:
                import json
                self.train_form.set_values(json.loads(train))
            except (ValueError, TypeError):
                pass
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
        self.plots.smoothing_slider.setValue(s.value("training/smoothing", 60))
        self.plots.log_check.setChecked(s.value("training/log_scale", False))
        self.plots.x_combo.setCurrentIndex(s.value("training/x_axis", 0))
        sizes = s.value("training/splitter", "")
        if sizes:
            try:
                self.splitter.setSizes([int(x) for x in sizes.split(",")])
            except ValueError:
                pass
        self._load_corpus(self.corpus_combo.currentData())

    def save_settings(self) -> None:
        import json

        s = Settings()
        config = self.model_form.config()
        if config is not None and self.scratch_radio.isChecked():
            s.set_value("training/model_config", json.dumps(config.to_dict()))
        s.set_value("training/train_config", json.dumps(self.train_form.values()))
        spec = self.tokenizer_combo.currentData()
        if isinstance(spec, str) and not spec.startswith("\x00"):
            s.set_value("training/tokenizer", spec)
        corpus = self.corpus_combo.currentData()
        if corpus and corpus != OPEN_FILE:
            s.set_value("training/corpus", corpus)
        files = [self.corpus_combo.itemData(i) for i in range(self.corpus_combo.count())]
        s.set_value("training/corpus_files", "\n".join(f for f in files if f and f not in BUILTIN_CORPORA
                                                        and f != OPEN_FILE and Path(f).exists()))
        s.set_value("training/smoothing", self.plots.smoothing_slider.value())
        s.set_value("training/log_scale", self.plots.log_check.isChecked())
        s.set_value("training/x_axis", self.plots.x_combo.currentIndex())
        s.set_value("training/splitter", ",".join(str(x) for x in self.splitter.sizes()))

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
        index = self._add_corpus_item(path)
        self.corpus_combo.setCurrentIndex(index)
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
        job = self.runner.start("corpus", load_corpus_job(source))
        job.events.connect(self._on_corpus_events)
        job.failed.connect(self._on_corpus_failed)
        self._corpus_job = job

    @Slot(list)
    def _on_corpus_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, CorpusLoadedEvent):
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
        self._update_controls()

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
        self._update_controls()

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

    @property
    def corpus_ready(self) -> bool:
        """The chosen corpus is loaded (Start will not have to read it)."""
        return self._corpus_ready()

    def _corpus_ready(self) -> bool:
        corpus = self.state.corpus
        return corpus is not None and (corpus.source or corpus.name) == self.corpus_combo.currentData()

    # ================================================================== tokenizer

    def _tokenizer_choice(self) -> str:
        return self.tokenizer_combo.currentData() or "char"

    @Slot()
    def _on_tokenizers_changed(self) -> None:
        self._fill_tokenizer_combo()
        self._update_vocab_estimate()

    @Slot()
    def _on_pending_tokenizer(self) -> None:
        self._fill_tokenizer_combo()
        if self.state.pending_tokenizer is not None and self.scratch_radio.isChecked():
            self.tokenizer_combo.setCurrentIndex(self.tokenizer_combo.findData(PENDING))
        self._update_vocab_estimate()

    @Slot(int)
    def _on_tokenizer_choice(self, _index: int) -> None:
        self._update_vocab_estimate()

    def _update_vocab_estimate(self) -> None:
        """vocab_size follows the tokenizer; for a char tokenizer, the corpus's distinct characters + 1."""
        choice = self._tokenizer_choice()
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
        elif choice in self._named_vocab:
            vocab = self._named_vocab[choice]
            info = "downloaded once (needs the network the first time), then offline"
        self.tokenizer_info.setText(info)
        if vocab is not None and self.scratch_radio.isChecked():
            self.model_form.set_vocab_size(vocab)

    # ================================================================== start from / fine-tune

    def _refresh_fine_tune_option(self) -> None:
        has_model = self.state.model is not None
        self.finetune_radio.setEnabled(has_model and not self._is_running())
        if not has_model and self.finetune_radio.isChecked():
            self.scratch_radio.setChecked(True)

    @Slot()
    def _on_start_from_toggled(self, *_args) -> None:
        fine_tune = self.finetune_radio.isChecked()
        if fine_tune and self.state.model is not None:
            self._scratch_config = self.model_form.config()
            self.model_form.set_config(self.state.config)
            self.model_form.set_locked(True, "Fine-tuning keeps the current model's shape")
            self._fill_tokenizer_combo()
            self.tokenizer_combo.setCurrentIndex(self.tokenizer_combo.findData(CURRENT))
            self.tokenizer_combo.setEnabled(False)
            self.tokenizer_info.setText("fine-tuning keeps the model's tokenizer")
        else:
            self.model_form.set_locked(False)
            self.tokenizer_combo.setEnabled(True)
            if getattr(self, "_scratch_config", None) is not None:
                self.model_form.set_config(self._scratch_config)
            if self.tokenizer_combo.currentData() == CURRENT:
                self.tokenizer_combo.setCurrentIndex(0)
            self._update_vocab_estimate()
        self._update_controls()

    # ================================================================== model changes from outside

    @Slot()
    def _on_model_changed(self) -> None:
        self._refresh_fine_tune_option()
        if self.finetune_radio.isChecked() and self.state.model is not None:
            self.model_form.set_config(self.state.config)
        if self._adopting or self.state.model is None:
            return
        # A model opened from a file: show its shape, settings, data and loss history.
        path = self.state.checkpoint_path
        train_state = self.state.train_state or {}

        is_default = path is not None and Path(path).resolve() == DEFAULT_MODEL.resolve()
        if path is not None and not is_default:
            if self.scratch_radio.isChecked():
                self.model_form.set_config(self.state.config)
            if isinstance(train_state.get("train_config"), dict):
                self.train_form.set_values(train_state["train_config"])
            self._restore_corpus_choice(train_state)
            self._fill_tokenizer_combo()
            self.tokenizer_combo.setCurrentIndex(max(0, self.tokenizer_combo.findData(CURRENT)))
        history = train_state.get("history")
        if isinstance(history, dict) and history.get("step"):
            name = "default model" if is_default else (Path(path).name if path else "opened model")
            try:
                self.plots.add_history(name, history)
            except (TypeError, ValueError):
                dialogs.status(self, "The file's training history is unreadable; curves not shown")
        self._update_controls()

    def _restore_corpus_choice(self, train_state: dict) -> None:
        source = train_state.get("corpus")
        if not isinstance(source, str) or not source:
            return
        if source in corpus_names():
            self._select_corpus(source)
            self._load_corpus(source)
        elif Path(source).exists():
            self.add_corpus_file(source)

    # ================================================================== running

    def _is_running(self) -> bool:
        return self._job is not None

    @Slot()
    def _on_form_changed(self) -> None:
        config = self.model_form.config()
        if config is not None:
            self.train_form.set_context_length(config.context_length)
        self._update_controls()

    def start_problem(self) -> str | None:
        """Why Start is not possible now (None when it is)."""
        if self._is_running():
            return "a run is in progress"
        if self.runner.running("training"):
            return "another training job is running"
        if self.model_form.config() is None:
            return self.model_form.error()
        problem = self.train_form.problem()
        if problem:
            return problem
        if self.finetune_radio.isChecked() and self.state.model is None:
            return "there is no current model to fine-tune"
        if not self.corpus_combo.currentData() or self.corpus_combo.currentData() == OPEN_FILE:
            return "choose a corpus"
        return None

    def _update_controls(self) -> None:
        running = self._is_running()
        problem = self.start_problem()
        self.start_button.setEnabled(problem is None)
        self.start_button.setToolTip(problem and f"Cannot start: {problem}" or
                                     "Train with these settings (the app keeps working meanwhile)")
        self.pause_button.setEnabled(running and not self._stopping)
        self.stop_button.setEnabled(running and not self._stopping)
        self.settings_scroll.widget().setEnabled(not running)
        if not running:
            self.pause_button.setText("Pause")

    def _request(self) -> RunSpec:
        train_config = self.train_form.train_config()
        choice = self._tokenizer_choice()
        fine_tune = self.finetune_radio.isChecked()
        corpus = self.state.corpus if self._corpus_ready() else self.corpus_combo.currentData()
        tokenizer = None
        if fine_tune or choice == CURRENT:
            tokenizer = self.state.tokenizer
        elif choice == PENDING:
            tokenizer = self.state.pending_tokenizer
        return RunSpec(
            train_config, corpus=corpus, tokenizer=tokenizer or (choice if not choice.startswith("\x00") else "char"),
            model_config=None if fine_tune else self.model_form.config(),
            # A copy is trained: other tabs may still be reading the current model while this runs.
            init=copy.deepcopy(self.state.model) if fine_tune else None, probe=True)

    @Slot()
    def start(self) -> Job | None:
        problem = self.start_problem()
        if problem is not None:
            dialogs.status(self, f"Cannot start: {problem}")
            return None
        try:
            request = self._request()
        except ValueError as e:
            dialogs.show_error(self, "Cannot start training", str(e))
            return None
        self._run_count += 1
        corpus_name = self.corpus_combo.currentText()
        start = "fine-tune" if request.init is not None else self.model_form.preset_combo.currentText()
        self._run = self.plots.start_run(f"run {self._run_count} · {start} · {corpus_name}")
        self.state.set_attention_probes([])
        self._training = TrainingJob(request)
        self._adopted = False
        self._stopping = False
        self._error_shown = False
        self._started_event = None
        self._last_val: float | None = None
        self.sample_text.clear()
        self.progress.setRange(0, 0)  # busy until the trainer says how many steps
        self.progress.setFormat("Preparing…")
        self.stats_label.setText("")
        job = self.runner.start("training", self._training.events())
        job.events.connect(self._on_events)
        job.failed.connect(self._on_failed)
        job.paused.connect(self._on_paused)
        job.resumed.connect(self._on_resumed)
        job.finished.connect(self._on_finished)
        self._job = job
        self._update_controls()
        self._refresh_fine_tune_option()
        self.running_changed.emit(True)
        return job

    @Slot()
    def _toggle_pause(self) -> None:
        if self._job is None:
            return
        if self._job.is_paused:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        if self._job is not None:
            self._job.pause()
            self.pause_button.setText("Resume")
            self.message_label.setText("Pausing after this step…")

    def resume(self) -> None:
        if self._job is not None:
            self._job.resume()
            self.pause_button.setText("Pause")

    @Slot()
    def stop(self) -> None:
        """Graceful stop: the trainer ends after the current step with a last evaluation."""
        if self._job is None or self._training is None:
            return
        self._stopping = True
        if self._training.trainer is not None:
            self._training.request_stop()
        else:
            self._job.stop()  # still preparing data: nothing worth a last evaluation
        if self._job.is_paused:
            self._job.resume()
        self.message_label.setText("Stopping after this step…")
        self._update_controls()

    def stop_now(self, wait_ms: int = 8000, adopt: bool = True) -> bool:
        """Closing the window: end the run at the next event boundary, wait for the thread, and (adopt)
        make what was trained the current model. True if the worker ended in time."""
        if self._job is None:
            return True
        self._stopping = True
        self._job.stop()
        ended = self.runner.stop_all(wait_ms)
        if ended and adopt:
            self._adopt_model()
        # Deliver the queued signals of the finished job now, so nothing arrives after the window is gone.
        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        return ended

    @property
    def is_running(self) -> bool:
        return self._is_running()

    # ================================================================== events

    @Slot(list)
    def _on_events(self, events: list) -> None:
        last_step = None
        run = self._run
        for event in events:
            match event:
                case StepEvent():
                    run.add_step(event.step, event.loss, event.lr, event.tokens_seen, event.tokens_per_s)
                    last_step = event
                case EvalEvent():
                    run.add_eval(event.step, event.val_loss, event.tokens_seen)
                    self._last_val = event.val_loss
                    if last_step is None and self._started_event is not None:
                        self.progress.setFormat(self._progress_text(event.step, None))
                case SampleEvent():
                    self._show_sample(event)
                case AttentionProbeEvent():
                    self.state.add_attention_probe(event)
                case StartedEvent():
                    self._started_event = event
                    self.progress.setRange(0, event.total_steps)
                    self.progress.setValue(event.start_step)
                    self.progress.setFormat(self._progress_text(event.start_step, None))
                    self.message_label.setText(f"{event.device} · {event.precision}")
                    self.message_label.setToolTip(event.device)
                case PreparedEvent():
                    self.message_label.setText(f"{event.num_tokens:,} tokens · {event.tokenizer} · "
                                               f"{event.num_params:,} parameters")
                    if self.scratch_radio.isChecked():
                        self.model_form.set_vocab_size(event.vocab_size)
                case ProgressEvent(job="eval"):
                    pass  # evaluations are quick; their end shows as a validation point
                case ProgressEvent():
                    self.progress.setRange(0, 0)
                    self.progress.setFormat(event.message or "Preparing…")
                case FinishedEvent():
                    self.message_label.setText(
                        f"{'Finished' if event.reason == 'completed' else 'Stopped'} at step {event.step:,}")
                case ErrorEvent():
                    self._show_error_once("Training stopped",
                                          event.message + (f"\n\n{event.hint}" if event.hint else ""))
                case _:
                    raise TypeError(f"unexpected training event {type(event).__name__}")
        if last_step is not None:
            self._pending_step = last_step
            # The progress bar repaints at once on every change: ~4 times a second is plenty, and spares
            # the training's CPU on small machines.
            if time.monotonic() - self._step_shown_at >= STATS_INTERVAL_S:
                self._flush_step()

    def _flush_step(self) -> None:
        """Show the latest step that is not on screen yet."""
        if self._pending_step is not None:
            self._show_step(self._pending_step)
            self._pending_step = None
            self._step_shown_at = time.monotonic()

    def _progress_text(self, step: int, eta: float | None) -> str:
        total = self._started_event.total_steps if self._started_event else 0
        text = f"step {step:,} / {total:,}"
        if eta is not None and step < total:
            text += f" · ETA {_format_duration(eta)}"
        return text

    def _show_step(self, event) -> None:
        if self.progress.maximum() != event.total_steps:
            self.progress.setRange(0, event.total_steps)
        self.progress.setValue(event.step)
        self.progress.setFormat(self._progress_text(event.step, event.eta_s))
        parts = [f"<b>{format_si(event.tokens_per_s)}</b> tokens/s"]
        if event.mfu > 0:
            parts.append(f"MFU <b>{100 * event.mfu:.1f}%</b>")
        parts.append(f"loss <b>{event.loss:.4f}</b>")
        if self._last_val is not None:
            parts.append(f"val <b>{self._last_val:.4f}</b>")
        parts.append(f"elapsed {_format_duration(event.elapsed_s)}")
        self.stats_label.setText(" · ".join(parts))

    def _show_sample(self, event) -> None:
        self.sample_title.setText(f"Latest sample (step {event.step:,})")
        self.sample_text.setPlainText(event.prompt + event.text)

    def _show_error_once(self, title: str, message: str) -> None:
        if getattr(self, "_error_shown", False):
            return
        self._error_shown = True
        dialogs.status(self, message.splitlines()[0])
        dialogs.show_error(self, title, message)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._show_error_once("Training failed", message)

    @Slot()
    def _on_paused(self) -> None:
        self._flush_step()
        self.message_label.setText("Paused")
        self.pause_button.setText("Resume")

    @Slot()
    def _on_resumed(self) -> None:
        if not self._stopping:
            self.message_label.setText("Training…")
        self.pause_button.setText("Pause")

    @Slot()
    def _on_finished(self) -> None:
        self._flush_step()
        training = self._training
        self._adopt_model()
        self._job = None
        self._stopping = False
        if self._run is not None and self._run.num_steps == 0 and not self._run.val_step:
            self.plots.remove_run(self._run)  # nothing happened (failed while preparing)
        self.plots.redraw()  # the last points, whatever the paint budget skipped
        if training is not None and training.trainer is not None:
            step = training.trainer.step
            self.progress.setValue(min(step, self.progress.maximum()) if self.progress.maximum() else 0)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("Ready")
        self._update_controls()
        self._refresh_fine_tune_option()
        self.running_changed.emit(False)

    def _adopt_model(self) -> None:
        """The trained model becomes the current one (once per run; nothing if no step was taken)."""
        training = self._training
        if training is None or self._adopted or training.trainer is None or training.trained_steps <= 0:
            return
        self._adopted = True
        trainer = training.trainer
        fine_tune = training.fine_tune
        path = self.state.checkpoint_path if fine_tune else None
        self._adopting = True
        try:
            self.state.set_model(trainer.model, training.tokenizer, path=path, train_state=trainer.state(),
                                 dirty=True)
        finally:
            self._adopting = False
        self._last_training = training
        dialogs.status(self, f"The trained model (step {trainer.step:,}) is now the current model: "
                             f"Save (Ctrl+S) keeps it")

    def optimizer_for(self, model: Any) -> Any:
        """The optimizer that trained `model`, if it came from the last run here (saved for exact resume)."""
        training = self._last_training
        if training is not None and training.trainer is not None and training.trainer.model is model:
            return training.trainer.optimizer
        return None

    # ================================================================== export command

    def command_settings(self) -> tuple[ModelConfig | None, TrainConfig | None, str, str | None, str | None]:
        """(model config, train config, corpus, tokenizer spec, init checkpoint) for torchrun_command."""
        config = self.model_form.config()
        try:
            train = self.train_form.train_config()
        except ValueError:
            train = None
        corpus = self.corpus_combo.currentData() or "python-docs"
        choice = self._tokenizer_choice()
        init = None
        if self.finetune_radio.isChecked():
            path = self.state.checkpoint_path
            init = str(path) if path is not None else "MODEL.safetensors"
        tokenizer = choice if not choice.startswith("\x00") else "tokenizer.json"
        return config, train, corpus, tokenizer, init

    @Slot()
    def show_command(self) -> None:
        config, train, corpus, tokenizer, init = self.command_settings()
        if config is None or train is None:
            dialogs.show_error(self, "Export command", "Fix the settings first: "
                               + (self.start_problem() or "some values are out of range"))
            return
        TorchrunDialog(config, train, corpus, tokenizer, init, self).exec()
