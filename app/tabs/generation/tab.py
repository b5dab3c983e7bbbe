"""Generation tab: one prompt, up to four decoders side by side, and the distribution behind each token.

Generate runs every column as one batched engine job (engine.generation.stream_generate with one
SamplingConfig per column, one shared seed, so columns share their random draws) through the
JobRunner, and streams tokens into the columns. Hovering or clicking a token selects its step; the
distribution view shows that step's candidates before and after the column's filters
(engine.sampling.filter_stages), recomputed at once whenever a slider of that column moves.
"""
from __future__ import annotations

import contextlib
import html
import random
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.formatting import format_bytes
from app.state import AppState
from app.tabs.generation.chat import ChatPanel
from app.tabs.generation.column import DecoderColumn
from app.tabs.generation.distribution import DistributionData, DistributionView
from app.tabs.generation.presets import SamplingSettings
from app.tabs.generation.token_view import ProbabilityLegend
from app.widgets.forms import share_tooltips_with_labels
from app.worker import Job, JobRunner
from engine import (
    SamplingConfig,
    check_precision,
    decoder_for,
    filter_stages,
    prompt_token_ids,
    stream_generate,
    weights_memory_bytes,
    window_length,
)

JOB_NAME = "generate"
MAX_COLUMNS = 4
CHUNK_SECONDS = 0.08  # token events are grouped this long before they cross to the GUI thread
TOP_CANDIDATES = 20
LOGITS_CACHE = 64  # recomputed raw logits kept for quick re-selection
LOGITS_JOB_NAME = "generate-distribution"
# A step's forward pass costing more than this (2 x params x tokens) runs in a job, not on the GUI thread.
INLINE_FLOPS = 5e8
STOP_REASONS = {"max_new_tokens": "reached max new tokens", "eot": "stopped at end of text",
                "stop_string": "stopped at a stop string"}
PRECISIONS = (("fp32", "FP32"), ("bf16", "BF16"), ("fp16", "FP16"), ("int8", "INT8"))

TEMPLATES = {
    "Zero-shot": ("Instruction only, no example: the model must infer the task from the words alone.",
                  "Translate English to French:\ncheese =>"),
    "One-shot": ("One worked example before the query shows the format of the answer.",
                 "Translate English to French:\nsea otter => loutre de mer\ncheese =>"),
    "Few-shot": ("Several worked examples before the query: small models follow a pattern far better "
                 "than an instruction.",
                 "Translate English to French:\nsea otter => loutre de mer\npeppermint => menthe poivrée\n"
                 "plush giraffe => girafe peluche\ncheese =>"),
}


@dataclass(frozen=True)
class TokenChunk:
    """Generation events grouped in the worker thread, so a fast model cannot flood the GUI."""

    kind = "gen_chunk"
    events: tuple[Any, ...]


def chunked(events: Iterable[Any], seconds: float = CHUNK_SECONDS) -> Iterator[TokenChunk]:
    """Group an engine event stream into TokenChunks of about `seconds` each; the last event flushes.

    Closing this generator (Stop) closes the engine's generator too.
    """
    with contextlib.closing(iter(events)) as iterator:
        batch: list[Any] = []
        last = time.monotonic()
        for event in iterator:
            batch.append(event)
            now = time.monotonic()
            if now - last >= seconds or getattr(event, "kind", "") != "gen_step":
                yield TokenChunk(tuple(batch))
                batch, last = [], now
        if batch:
            yield TokenChunk(tuple(batch))


def sampling_config(settings: SamplingSettings, max_new_tokens: int, seed: int,
                    stop_at_eot: bool = False) -> SamplingConfig:
    """The engine's config for one column (temperature 0 reads as greedy, as on every playground)."""
    return SamplingConfig(greedy=settings.greedy, temperature=settings.temperature, top_k=settings.top_k,
                          top_p=settings.top_p, min_p=settings.min_p,
                          repetition_penalty=settings.repetition_penalty, max_new_tokens=max_new_tokens,
                          seed=seed, stop_at_eot=stop_at_eot)


def generation_job(model, tokenizer, prompt: str, configs: list[SamplingConfig], precision: str,
                   prompt_ids: list[int]) -> Iterator[TokenChunk]:
    """The job handed to the JobRunner. stream_generate is called here, in the worker thread, because
    preparing a bf16 / int8 copy of a big model takes a while and must not freeze the window."""
    yield from chunked(stream_generate(model, tokenizer, prompt, configs, precision=precision,
                                       prompt_ids=prompt_ids))


def step_logits(model, precision: str, window_ids: list[int]) -> torch.Tensor:
    """The logits (V,) the engine computes after these tokens: its own inference forward and precision."""
    decoder = decoder_for(model, precision)
    ids = torch.tensor([window_ids], dtype=torch.long, device=decoder.device)
    with torch.inference_mode():
        return decoder.forward(ids, decoder.new_cache(1))[0].float().cpu()


@dataclass(frozen=True)
class LogitsReady:
    kind = "gen_logits"
    key: tuple[int, int, int]  # (id of the model, column, step)
    logits: torch.Tensor


def logits_job(model, precision: str, key: tuple[int, int, int], window_ids: list[int]) -> Iterator[LogitsReady]:
    """One step's logits, off the GUI thread (a forward pass of a big model takes seconds)."""
    yield LogitsReady(key, step_logits(model, precision, window_ids))


@dataclass
class _Run:
    """What one Generate produced, kept for the distribution view."""

    prompt: str
    prompt_ids: list[int]  # what the model was fed (after the engine's empty / too-long prompt rules)
    precision: str
    ids: list[list[int]] = field(default_factory=list)  # per column: generated ids
    records: list[list[Any]] = field(default_factory=list)  # per column: the engine's per-step row records
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    done: Any = None  # the engine's GenerationDoneEvent, once it came
    chat: bool = False  # a chat turn: `prompt` is the user's message (see chat.py)


class GenerationTab(QWidget):
    generation_started = Signal()
    generation_finished = Signal()  # after the job ended (completed, stopped or failed)

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.job: Job | None = None
        self.run: _Run | None = None
        self._restart_after_stop = False
        self._training_note = False
        self._selection: tuple[int, int] | None = None  # (column, step)
        self._logits_cache: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self._logits_job: Job | None = None
        self._wanted_logits: tuple[tuple[int, int, int], list[int]] | None = None
        self.columns: list[DecoderColumn] = []
        self._build()
        state.model_changed.connect(self._on_model_changed)
        state.corpus_changed.connect(self._offer_starter_prompt)
        self._starter_offered = False
        runner.job_started.connect(self._on_other_jobs)
        runner.job_finished.connect(self._on_other_jobs)
        for preset in ("Greedy", "Balanced"):
            column = self.add_column()
            column.apply_preset(preset)
        self._on_model_changed()

    # ---------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Write a prompt… (Ctrl+Enter generates)")
        self.prompt.setToolTip("The prompt: the text the model continues. Every column continues the same prompt.")
        self.prompt.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.prompt.textChanged.connect(self._update_prompt_info)
        self.prompt_info = QLabel()
        self.prompt_info.setTextFormat(Qt.TextFormat.RichText)
        self.templates_button = QToolButton()
        self.templates_button.setText("Insert template")
        self.templates_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.templates_button.setToolTip("Prompt-engineering templates: zero-shot (instruction only), one-shot "
                                         "(one example) and few-shot (several examples)")
        menu = QMenu(self.templates_button)
        for name, (tip, text) in TEMPLATES.items():
            action = menu.addAction(name, lambda t=text: self.insert_template(t))
            action.setToolTip(tip)
        menu.setToolTipsVisible(True)
        self.templates_button.setMenu(menu)
        prompt_head = QHBoxLayout()
        title = QLabel("<b>Prompt</b>")
        prompt_head.addWidget(title)
        prompt_head.addWidget(self.prompt_info, 1)
        prompt_head.addWidget(self.templates_button)
        prompt_box = QVBoxLayout()
        prompt_box.setSpacing(4)
        prompt_box.addLayout(prompt_head)
        self.chat = ChatPanel()
        self.chat.mode_changed.connect(self._on_chat_mode)
        prompt_box.addWidget(self.chat)
        prompt_box.addWidget(self.prompt, 1)

        # Shared settings: max new tokens, seed, precision; Generate / Stop; speed.
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(200)
        self.max_tokens.setToolTip("Max new tokens: each column stops after this many new tokens, even if the "
                                   "text is unfinished.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(1234)
        self.seed.setToolTip("Seed: fixes the random draws, so a run repeats exactly. All columns share the "
                             "same draws, so their differences come from their settings, not from luck.")
        self.dice = QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("Roll a new random seed")
        self.dice.clicked.connect(self.roll_seed)
        seed_row = QHBoxLayout()
        seed_row.setSpacing(4)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        self.precision = QComboBox()
        self.precision.setToolTip("Number format of the weights while generating: FP32 takes 4 bytes per "
                                  "parameter, BF16 / FP16 2 (FP16 needs a GPU), INT8 1 (Linear layers "
                                  "quantized, CPU). Smaller is lighter, at some cost in accuracy.")
        for key, label in PRECISIONS:
            self.precision.addItem(label, key)
        form = QFormLayout()
        form.setVerticalSpacing(4)
        form.addRow("Max new tokens", self.max_tokens)
        form.addRow("Seed", seed_row)
        form.addRow("Precision", self.precision)
        self.stop_at_eot = QCheckBox("Stop at end of text")
        self.stop_at_eot.setToolTip("End a column when it produces the tokenizer's end-of-text token "
                                    "(tokenizers without one, like char, never stop early)")
        form.addRow("", self.stop_at_eot)
        share_tooltips_with_labels(form, fallbacks={1: self.seed})  # row 1, the seed, is a layout

        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumHeight(34)
        self.generate_button.setToolTip("Run every column on the prompt as one batched job (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setMinimumHeight(34)
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop generating now (Esc); the text so far stays")
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.stop_button, 1)
        self.speed = QLabel("–")
        self.speed.setToolTip("Generation speed: new tokens per second over all columns together")
        font = self.speed.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.speed.setFont(font)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        shared = QVBoxLayout()
        shared.setSpacing(6)
        shared.addLayout(form)
        shared.addLayout(buttons)
        shared.addWidget(self.speed)
        shared.addWidget(self.status, 1)
        shared_frame = QFrame()
        shared_frame.setLayout(shared)
        shared_frame.setFixedWidth(300)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addLayout(prompt_box, 1)
        top.addWidget(shared_frame)
        top_widget = QWidget()
        top_widget.setLayout(top)

        # Toolbar over the columns: colour toggle + legend, live regenerate, add column.
        self.colour_toggle = QCheckBox("Colour by probability")
        self.colour_toggle.setChecked(True)
        self.colour_toggle.setToolTip("Shade each generated token by the probability its decoder gave it")
        self.colour_toggle.toggled.connect(self._on_colour_toggled)
        self.legend = ProbabilityLegend()
        self.live_toggle = QCheckBox("Live regenerate")
        self.live_toggle.setToolTip("Regenerate whenever a slider is released or a preset picked")
        self.add_button = QPushButton("+ Add decoder")
        self.add_button.setToolTip(f"Add a decoder column (up to {MAX_COLUMNS}) to compare settings side by side")
        self.add_button.clicked.connect(self._on_add_clicked)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(QLabel("<b>Decoders</b>"))
        bar.addSpacing(12)
        bar.addWidget(self.colour_toggle)
        bar.addWidget(self.legend)
        bar.addSpacing(12)
        bar.addWidget(self.live_toggle)
        bar.addStretch(1)
        bar.addWidget(self.add_button)
        self.columns_layout = QHBoxLayout()
        self.columns_layout.setContentsMargins(0, 0, 0, 0)
        self.columns_layout.setSpacing(8)
        middle = QVBoxLayout()
        middle.setContentsMargins(0, 0, 0, 0)
        middle.setSpacing(4)
        middle.addLayout(bar)
        middle.addLayout(self.columns_layout, 1)
        middle_widget = QWidget()
        middle_widget.setLayout(middle)

        self.distribution = DistributionView()

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top_widget)
        self.splitter.addWidget(middle_widget)
        self.splitter.addWidget(self.distribution)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 2)
        self.splitter.setSizes([130, 440, 260])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(self.splitter)

        QShortcut(QKeySequence("Ctrl+Return"), self, self.generate)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.generate)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    # ---------------------------------------------------------------------------------- columns

    def add_column(self) -> DecoderColumn | None:
        if len(self.columns) >= MAX_COLUMNS:
            return None
        column = DecoderColumn(len(self.columns))
        if self.state.config is not None:
            column.set_vocab_size(self.state.config.vocab_size)
        column.settings_changed.connect(self._on_column_settings)
        column.settings_released.connect(self._on_column_released)
        column.remove_requested.connect(self._on_remove_requested)
        column.step_selected.connect(self._on_step_selected)
        column.message.connect(self.show_message)
        column.output.set_colour_by_probability(self.colour_toggle.isChecked())
        self.columns.append(column)
        self.columns_layout.addWidget(column, 1)
        self._update_column_buttons()
        return column

    def remove_column(self, column: DecoderColumn) -> None:
        if len(self.columns) <= 1 or column not in self.columns:
            return
        if self.is_generating():
            self.show_message("Stop generating before removing a column")
            return
        index = self.columns.index(column)
        self.columns.remove(column)
        column.setParent(None)
        column.deleteLater()
        for i, c in enumerate(self.columns):
            c.set_index(i)
        if self.run is not None and index < len(self.run.ids):
            del self.run.ids[index]
            del self.run.records[index]
        self._logits_cache.clear()
        self._select(None)
        self._update_column_buttons()

    def _update_column_buttons(self) -> None:
        self.add_button.setEnabled(len(self.columns) < MAX_COLUMNS and not self.is_generating())
        for c in self.columns:
            c.remove_button.setEnabled(len(self.columns) > 1 and not self.is_generating())

    @Slot()
    def _on_add_clicked(self) -> None:
        column = self.add_column()
        if column is not None:
            column.apply_preset("Creative" if len(self.columns) % 2 else "Balanced")

    @Slot()
    def _on_remove_requested(self) -> None:
        self.remove_column(self.sender())

    # ---------------------------------------------------------------------------------- model

    def is_generating(self) -> bool:
        return self.job is not None

    @Slot()
    @Slot()
    def _offer_starter_prompt(self) -> None:
        """Once per session, an empty prompt gets the start of a line from the corpus, so a first
        Generate shows the model continuing text it knows (a person may clear it for an empty prompt)."""
        corpus = self.state.corpus
        if self._starter_offered or corpus is None or self.prompt.toPlainText():
            return
        for document in corpus.documents[:50]:
            for line in document.splitlines():
                words = line.split()
                if len(words) >= 3 and sum(c.isalpha() for c in line) > len(line) / 2:
                    self._starter_offered = True
                    self.prompt.setPlainText(" ".join(words[:4]) + " ")
                    return

    def _on_model_changed(self) -> None:
        self._offer_starter_prompt()
        if self.is_generating():
            self._restart_after_stop = False
            self.stop()
        self._logits_cache.clear()
        self._wanted_logits = None
        self.run = None
        self._select(None)
        model, config = self.state.model, self.state.config
        for column in self.columns:
            if config is not None:
                column.set_vocab_size(config.vocab_size)
            column.output.start("")
            column.info.setText(" ")
        self._update_precisions()
        if model is not None and next(model.parameters()).dtype == torch.bfloat16:
            self.precision.setCurrentIndex(self.precision.findData("bf16"))  # a bf16 model: no fp32 copy
        self._update_prompt_info()
        has_eot = self.state.tokenizer is not None and self.state.tokenizer.eot_id is not None
        self.stop_at_eot.setEnabled(has_eot)
        self.chat.set_tokenizer(self.state.tokenizer)
        if model is None:
            self.distribution.clear("No model yet: train one in the Training tab or open a checkpoint.")
            self.show_message("No model loaded: train one or open a checkpoint to generate", status_bar=False)
        else:
            self.distribution.clear("Generate, then hover or click a token to see the choice the decoder had "
                                    "at that step.")
            self.status.setText(self._model_line())
        self.generate_button.setEnabled(model is not None and not self.is_generating())

    def _model_line(self) -> str:
        config = self.state.config
        if config is None:
            return ""
        tokenizer = self.state.tokenizer
        name = tokenizer.describe() if tokenizer is not None else "no tokenizer"
        return (f"Model: {config.num_params() / 1e6:.2f} M parameters · context {config.context_length:,} · "
                f"{name}")

    def _model_device(self) -> torch.device:
        model = self.state.model
        try:
            return next(model.parameters()).device if model is not None else torch.device("cpu")
        except StopIteration:
            return torch.device("cpu")

    def _update_precisions(self) -> None:
        model = self.state.model
        on_cuda = self._model_device().type == "cuda"
        items: QStandardItemModel = self.precision.model()
        for row, (key, label) in enumerate(PRECISIONS):
            item = items.item(row)
            text = label
            if model is not None:
                with contextlib.suppress(Exception):
                    text = f"{label} · {format_bytes(weights_memory_bytes(model, key))}"
            item.setText(text)
            enabled, tip = True, ""
            if key == "fp16" and not on_cuda:
                enabled, tip = False, "FP16 generation needs a CUDA GPU; on the CPU use BF16 or INT8."
            elif key == "int8" and on_cuda:
                enabled, tip = False, "INT8 here is dynamic quantization for the CPU; on a GPU use BF16 or FP16."
            item.setEnabled(enabled)
            item.setToolTip(tip or f"{label}: weights in memory shown beside the name")
        if not items.item(self.precision.currentIndex()).isEnabled():
            self.precision.setCurrentIndex(0)

    @Slot(str)
    def _on_other_jobs(self, _name: str = "") -> None:
        """While training runs, Generate still works on the current model; say so (once per change)."""
        training = any("train" in job.name for job in self.runner.running())
        if training == self._training_note:
            return
        self._training_note = training
        if training:
            self.status.setText("<span style='color:#D55E00'>Training is running. Generate uses the current "
                                "model (if it is the one being fine-tuned, its weights change as it "
                                "learns); the trained model replaces it when training ends.</span>")
        elif self.state.model is not None:
            self.status.setText(self._model_line())

    # ---------------------------------------------------------------------------------- prompt

    @Slot(bool)
    def _on_chat_mode(self, on: bool) -> None:
        self.prompt.setPlaceholderText("Your message… (Ctrl+Enter sends it; empty: the last one answered again)" if on
                                       else "Write a prompt… (Ctrl+Enter generates)")

    def insert_template(self, text: str) -> None:
        cursor = self.prompt.textCursor()
        if self.prompt.toPlainText().strip():
            cursor.insertText(("\n" if not cursor.atBlockStart() else "") + text)
        else:
            self.prompt.setPlainText(text)
            cursor = self.prompt.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            self.prompt.setTextCursor(cursor)
        self.prompt.setFocus()

    @Slot()
    def _update_prompt_info(self) -> None:
        tokenizer, config = self.state.tokenizer, self.state.config
        if tokenizer is None or config is None:
            self.prompt_info.setText("")
            return
        n = len(tokenizer.encode(self.prompt.toPlainText()))
        text = f"{n:,} token{'s' if n != 1 else ''} · context {config.context_length:,}"
        if n >= config.context_length:
            text += (f" · <span style='color:#D55E00'>longer than the context: the model sees only the last "
                     f"{config.context_length - 1:,} tokens</span>")
        self.prompt_info.setText(text)

    @Slot()
    def roll_seed(self) -> None:
        self.seed.setValue(random.randint(0, self.seed.maximum()))

    # ---------------------------------------------------------------------------------- run

    @Slot()
    def generate(self) -> None:
        """Start (or restart) a batched generation of every column."""
        if self.is_generating():
            self._restart_after_stop = True
            self.stop()
            return
        model, tokenizer = self.state.model, self.state.tokenizer
        if model is None or tokenizer is None:
            self.show_message("No model to generate with: train one or open a checkpoint first")
            return
        prompt = self.prompt.toPlainText()
        precision = self.precision.currentData()
        chat = self.chat.active()  # a chat turn stops at the model's end-of-turn tokens
        stop_at_eot = chat or (self.stop_at_eot.isChecked() and self.stop_at_eot.isEnabled())
        try:
            configs = [sampling_config(c.settings(), self.max_tokens.value(), self.seed.value(), stop_at_eot)
                       for c in self.columns]
            check_precision(precision, self._model_device(), use="inference")
            if chat:  # as the engine would cut it: the last context - 1 tokens
                prompt_ids = self.chat.prompt_ids(prompt)[-(model.config.context_length - 1):]
            else:
                prompt_ids = prompt_token_ids(tokenizer, prompt, model.config)
        except ValueError as e:
            self.show_message(f"Cannot generate: {e}")
            return
        self.run = _Run(prompt=prompt, prompt_ids=prompt_ids, precision=precision,
                        ids=[[] for _ in self.columns], records=[[] for _ in self.columns], chat=chat)
        self._logits_cache.clear()
        self._select(None)
        for column in self.columns:
            column.start_output("" if chat else prompt)
        self.job = self.runner.start(JOB_NAME, generation_job(model, tokenizer, prompt, configs, precision,
                                                              prompt_ids))
        self.job.events.connect(self._on_events)
        self.job.failed.connect(self._on_failed)
        self.job.finished.connect(self._on_finished)
        self.generate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.speed.setText("…")
        self._update_column_buttons()
        self.generation_started.emit()

    @Slot()
    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()
            self.stop_button.setEnabled(False)

    @Slot(list)
    def _on_events(self, batch: list) -> None:
        run = self.run
        if run is None:
            return
        for chunk in batch:
            per_column: list[list[tuple[int, str, float]]] = [[] for _ in self.columns]
            for event in getattr(chunk, "events", (chunk,)):
                if event.kind == "gen_step":
                    self._take_step(event, per_column)
                elif event.kind == "gen_done":
                    run.done = event
            for column, tokens in zip(self.columns, per_column):
                if tokens:
                    column.output.append_tokens(tokens)
        elapsed = max(time.monotonic() - run.started, 1e-6)
        self.speed.setText(f"{run.tokens / elapsed:,.1f} tokens/s")
        for i, column in enumerate(self.columns):
            column.info.setText(f"{len(run.ids[i]):,} tokens")
        if self._selection is None and run.ids and run.ids[0]:
            self._select((0, 0))

    def _take_step(self, event: Any, per_column: list[list[tuple[int, str, float]]]) -> None:
        run = self.run
        for row, record in enumerate(event.rows):
            if row >= len(run.ids) or record is None:  # None: this row finished earlier
                continue
            run.ids[row].append(int(record.token_id))
            run.records[row].append(record)
            run.tokens += 1
            per_column[row].append((len(run.ids[row]) - 1, record.piece, float(record.prob)))

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.show_message(f"Generation failed: {message}")

    @Slot()
    def _on_finished(self) -> None:
        self.job = None
        run = self.run
        self.stop_button.setEnabled(False)
        self.generate_button.setEnabled(self.state.model is not None)
        self._update_column_buttons()
        if run is not None:
            done = run.done
            elapsed = max(time.monotonic() - run.started, 1e-6)
            speed = done.tokens_per_s if done is not None else run.tokens / elapsed
            self.speed.setText(f"{speed:,.1f} tokens/s")
            for i, column in enumerate(self.columns):
                if i < len(run.ids):
                    reason = STOP_REASONS.get(done.stop_reasons[i], "") if done is not None else "stopped"
                    column.info.setText(f"{len(run.ids[i]):,} tokens · {reason}")
            if run.chat and any(run.ids):
                self.chat.finish_turn(run.prompt, run.ids, [c.name for c in self.columns])
                if self.prompt.toPlainText() == run.prompt:  # (not a message typed meanwhile)
                    self.prompt.clear()  # ready for the next one
        self.generation_finished.emit()
        if self._restart_after_stop:
            self._restart_after_stop = False
            QTimer.singleShot(0, self.generate)

    # ---------------------------------------------------------------------------------- live

    @Slot()
    def _on_colour_toggled(self, on: bool) -> None:
        for column in self.columns:
            column.output.set_colour_by_probability(on)
        self.legend.setVisible(on)

    @Slot()
    def _on_column_settings(self) -> None:
        if self._selection is not None and self.sender() is self.columns[self._selection[0]]:
            self.refresh_distribution()

    @Slot()
    def _on_column_released(self) -> None:
        if self.live_toggle.isChecked() and self.state.model is not None:
            self.generate()

    @Slot(int)
    def _on_step_selected(self, step: int) -> None:
        column = self.sender()
        if column in self.columns:
            self._select((self.columns.index(column), step))

    def select_step(self, column: int, step: int) -> None:
        """Select a column's step (as hovering its token does)."""
        self._select((column, step))

    def _select(self, selection: tuple[int, int] | None) -> None:
        if selection == self._selection:
            return
        self._selection = selection
        for i, column in enumerate(self.columns):
            column.output.select_step(selection[1] if selection is not None and selection[0] == i else None)
        if selection is not None:
            self.refresh_distribution()

    # ---------------------------------------------------------------------------------- distribution

    def refresh_distribution(self) -> None:
        """Recompute the distribution view for the selected step with its column's current settings."""
        run, selection, model = self.run, self._selection, self.state.model
        if run is None or selection is None or model is None:
            return
        col, step = selection
        if col >= len(run.ids) or step >= len(run.ids[col]):
            return
        key = (id(model), col, step)
        logits = self._logits_cache.get(key)
        if logits is None:
            window_ids = self._window_ids(col, step)
            if 2 * model.config.num_params() * len(window_ids) > INLINE_FLOPS:
                self._request_logits(key, window_ids)  # a big model: one forward would freeze the window
                return
            try:
                logits = step_logits(model, run.precision, window_ids)
            except (ValueError, RuntimeError) as e:
                self.distribution.clear(f"Cannot show this step: {e}")
                return
            self._remember_logits(key, logits)
        prev_ids = run.prompt_ids + run.ids[col][:step]
        try:
            stages = filter_stages(logits, sampling_config(self.columns[col].settings(), 1, 0), prev_ids)
        except ValueError as e:
            self.distribution.clear(f"Cannot show this step: {e}")
            return
        self.distribution.show_data(self._distribution_data(col, step, stages))

    def _window_ids(self, col: int, step: int) -> list[int]:
        """The tokens the engine's forward saw when it chose this step's token."""
        run = self.run
        ids = run.prompt_ids + run.ids[col][:step]
        return ids[-window_length(len(run.prompt_ids), step, self.state.config.context_length):]

    def _remember_logits(self, key: tuple[int, int, int], logits: torch.Tensor) -> None:
        self._logits_cache[key] = logits
        self._logits_cache.move_to_end(key)
        if len(self._logits_cache) > LOGITS_CACHE:
            self._logits_cache.popitem(last=False)

    def _request_logits(self, key: tuple[int, int, int], window_ids: list[int]) -> None:
        """Compute a step's logits in a job; only the latest request matters while one runs."""
        self._wanted_logits = (key, window_ids)
        self.distribution.summary.setText("Computing the distribution of this step…")
        if self._logits_job is not None:
            return
        job = self.runner.start(LOGITS_JOB_NAME, logits_job(self.state.model, self.run.precision, key, window_ids))
        job.events.connect(self._on_logits_events)
        job.failed.connect(self._on_logits_failed)
        job.finished.connect(self._on_logits_finished)
        self._logits_job = job

    @Slot(list)
    def _on_logits_events(self, batch: list) -> None:
        for event in batch:
            self._remember_logits(event.key, event.logits)
            if self.state.model is not None and self._selection is not None \
                    and event.key == (id(self.state.model), *self._selection):
                self.refresh_distribution()

    @Slot(str)
    def _on_logits_failed(self, message: str) -> None:
        self.distribution.clear(f"Cannot show this step: {message}")

    @Slot()
    def _on_logits_finished(self) -> None:
        self._logits_job = None
        wanted, self._wanted_logits = self._wanted_logits, None
        if wanted is not None and wanted[0] not in self._logits_cache and self.run is not None \
                and self.state.model is not None and wanted[0][0] == id(self.state.model):
            self._request_logits(*wanted)

    def _distribution_data(self, col: int, step: int, stages: Any) -> DistributionData:
        run = self.run
        tokenizer = self.state.tokenizer
        column = self.columns[col]
        raw, final = stages.raw, stages.final
        order = np.argsort(-raw, kind="stable")[:TOP_CANDIDATES]
        chosen_id = run.ids[col][step]
        if chosen_id not in order:
            order = np.append(order[:-1], chosen_id)
        labels = [_token_label(tokenizer.render_token(int(t))) for t in order]
        chosen = int(np.flatnonzero(order == chosen_id)[0])
        kept = int((final > 0).sum())
        counts = {key: int((stages.removed_by == key).sum()) for key in ("top_k", "top_p", "min_p", "greedy")}
        counts["penalty"] = int(stages.penalised.sum())
        record = run.records[col][step]
        before = _context(tokenizer.decode((run.prompt_ids + run.ids[col][:step])[-24:]))
        chosen_text = html.escape(_token_label(tokenizer.render_token(chosen_id)))
        parts = [f"{counts[k]:,} by {name}" for k, name in
                 (("top_k", "top-k"), ("top_p", "top-p"), ("min_p", "min-p"), ("greedy", "greedy decoding"))
                 if counts.get(k)]
        summary = (f"After “{before}” it chose “{chosen_text}” (p = {float(record.prob):.3f} when generated). "
                   f"With the column's current settings {kept:,} of {len(raw):,} tokens remain"
                   + (f"; removed {', '.join(parts)}" if parts else "")
                   + (f"; the repetition penalty lowered {counts['penalty']:,} seen tokens." if counts["penalty"]
                      else "."))
        title = (f"Next-token distribution · <span style='color:{column.colour}'>{column.name}</span> · "
                 f"step {step + 1}")
        return DistributionData(labels=labels, raw=raw[order], final=final[order],
                                removed_by=[str(r) for r in stages.removed_by[order]],
                                penalised=[bool(p) for p in stages.penalised[order]],
                                chosen=chosen, title=title, summary=summary, removed_counts=counts)

    # ---------------------------------------------------------------------------------- messages

    def show_message(self, text: str, *, status_bar: bool = True) -> None:
        """One line for the user: in the tab, and in the window's status bar when there is one."""
        self.status.setText(text)
        window = self.window()
        if status_bar and isinstance(window, QMainWindow):
            window.statusBar().showMessage(text, 8000)

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)


def _token_label(text: str) -> str:
    """A token for a label: spaces shown as ␣ (render_token already escapes newlines and tabs)."""
    return text.replace(" ", "␣")


def _context(text: str) -> str:
    """Text before a step, on one line, HTML-safe."""
    return html.escape(text.replace("\n", "↵").replace("\t", "→"))
