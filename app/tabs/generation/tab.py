"""Generation tab: one prompt, up to four decoders side by side, and the distribution behind each token.

Generate runs every column as one batched engine job (engine.generation.stream_generate with one
SamplingConfig per column, one shared seed, so columns share their random draws) through the
JobRunner, and streams tokens into the columns, each with its time to first token and speed.
Hovering or clicking a token selects its step; the distribution view shows that step's candidates
before and after the column's filters (engine.sampling.filter_stages), recomputed at once whenever a
slider of that column moves.

The tab says what changed without being asked: output made with other settings is marked stale, a
top-k lowered to fit a small vocabulary and prompt characters the tokenizer cannot represent are
noted, and the selected step stays put across a live regenerate.

Its parts live beside it (the prompt in prompt_panel.py, the shared settings row in run_settings.py,
the toolbar over the columns in decoders_bar.py, a column in column.py, the selected step's distribution
in step_view.py, the jobs and the record of a run in jobs.py). What stays here is the run itself and what
ties the parts together (stale marks, notes, selection across a live regenerate); they share the run and
the selection, so they are kept in one class of about 540 lines rather than split apart.
"""
from __future__ import annotations

import html
import time
from collections import OrderedDict
from typing import Any

import torch
from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import dialogs, theme
from app.state import AppState
from app.tabs.generation.column import DecoderColumn
from app.tabs.generation.decoders_bar import MAX_COLUMNS, DecodersBar
from app.tabs.generation.distribution import DistributionView
from app.tabs.generation.jobs import (
    ColumnTiming,
    GenerationRun,
    JobStarted,
    LogitsReady,
    generation_job,
    sampling_config,
)
from app.tabs.generation.prompt_panel import TEMPLATES, PromptPanel
from app.tabs.generation.run_settings import RunSettings
from app.tabs.generation.step_view import StepDistribution
from app.worker import Job, JobRunner
from engine import (
    GenerationDoneEvent,
    GenerationStepEvent,
    ProgressEvent,
    check_precision,
    prompt_token_ids,
    window_length,
)

__all__ = ["GenerationTab", "TEMPLATES", "window_length", "LogitsReady"]

JOB_NAME = "generate"
STOP_REASONS = {"max_new_tokens": "reached max new tokens", "eot": "stopped at end of text",
                "stop_string": "stopped at a stop string"}

class GenerationTab(QWidget):
    generation_started = Signal()
    generation_finished = Signal()  # after the job ended (completed, stopped or failed)

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.job: Job | None = None
        self.run: GenerationRun | None = None
        self._restart_after_stop = False
        self._training_note = False
        self._selection: tuple[int, int] | None = None  # (column, step)
        self._wanted_selection: tuple[int, int] | None = None  # to restore once a regenerate reaches it
        self._changed_while_running = False
        self.columns: list[DecoderColumn] = []
        self._build()
        state.model_changed.connect(self._on_model_changed)
        state.corpus_changed.connect(self.prompt_panel.offer_starter)
        runner.job_started.connect(self._on_other_jobs)
        runner.job_finished.connect(self._on_other_jobs)
        for preset in ("Greedy", "Balanced"):
            column = self.add_column()
            column.apply_preset(preset)
        self._on_model_changed()

    # ---------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        self.prompt_panel = PromptPanel(self.state)
        self.prompt, self.prompt_info = self.prompt_panel.prompt, self.prompt_panel.prompt_info
        self.templates_button, self.chat = self.prompt_panel.templates_button, self.prompt_panel.chat
        self.prompt.textChanged.connect(self._on_output_settings_changed)

        # Shared settings in one row: max new tokens, seed, precision, stop strings, Generate / Stop, speed.
        self.settings_row = settings = RunSettings()
        self.max_tokens, self.seed, self.dice = settings.max_tokens, settings.seed, settings.dice
        self.precision, self.stop_at_eot = settings.precision, settings.stop_at_eot
        self.stop_strings = settings.stop_strings_edit
        self.generate_button, self.stop_button, self.speed = (settings.generate_button, settings.stop_button,
                                                              settings.speed)
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        settings.changed.connect(self._on_output_settings_changed)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)

        top = QVBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(4)
        top.addWidget(self.prompt_panel, 1)
        top.addWidget(settings)
        top.addWidget(self.status)
        top_widget = QWidget()
        top_widget.setLayout(top)

        # Toolbar over the columns: colour toggle + legend, live regenerate, add column.
        self.decoders_bar = DecodersBar()
        self.colour_toggle, self.legend = self.decoders_bar.colour_toggle, self.decoders_bar.legend
        self.live_toggle, self.add_button = self.decoders_bar.live_toggle, self.decoders_bar.add_button
        self.colour_toggle.toggled.connect(self._on_colour_toggled)
        self.add_button.clicked.connect(self._on_add_clicked)
        self.columns_layout = QHBoxLayout()
        self.columns_layout.setContentsMargins(0, 0, 0, 0)
        self.columns_layout.setSpacing(8)
        middle = QVBoxLayout()
        middle.setContentsMargins(0, 0, 0, 0)
        middle.setSpacing(4)
        middle.addWidget(self.decoders_bar)
        middle.addLayout(self.columns_layout, 1)
        middle_widget = QWidget()
        middle_widget.setLayout(middle)

        self.distribution = DistributionView()
        self.steps = StepDistribution(self, self.distribution)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top_widget)
        self.splitter.addWidget(middle_widget)
        self.splitter.addWidget(self.distribution)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 1)
        # The decoders' text gets most of the height; drag the handles to give the prompt or chart more.
        self.splitter.setSizes([140, 400, 200])
        top_widget.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.splitter)

        QShortcut(QKeySequence("Ctrl+Return"), self, self.generate)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.generate)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "status"):
            self.prompt_panel.update_info()  # their coloured notes take the new theme's readable colours
            self._refresh_status()

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
        self._refresh_status()
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
            del self.run.timings[index]
        self.steps.cache.clear()
        self._select(None)
        self._update_column_buttons()
        self._refresh_status()

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

    def _on_model_changed(self) -> None:
        self.prompt_panel.offer_starter()
        if self.is_generating():
            self._restart_after_stop = False
            self.stop()
        self.steps.forget()
        self.run = None
        self._select(None)
        self._wanted_selection = None
        model, config = self.state.model, self.state.config
        for column in self.columns:
            if config is not None:
                column.set_vocab_size(config.vocab_size)
            column.output.start("")
            column.set_info(" ")
        self.settings_row.update_precisions(model, self._model_device())
        if model is not None and next(model.parameters()).dtype == torch.bfloat16:
            self.precision.setCurrentIndex(self.precision.findData("bf16"))  # a bf16 model: no fp32 copy
        self.prompt_panel.update_info()
        has_eot = self.state.tokenizer is not None and self.state.tokenizer.eot_id is not None
        self.stop_at_eot.setEnabled(has_eot)
        self.stop_at_eot.setToolTip("End a column when it produces the tokenizer's end-of-text token" if has_eot
                                    else "This model's tokenizer has no end-of-text token, so there is nothing "
                                         "to stop at (use a stop string)")
        self.chat.set_tokenizer(self.state.tokenizer)
        if model is None:
            self.distribution.clear("No model yet: train one in the Training tab or open a checkpoint.")
            self.show_message("No model loaded: train one or open a checkpoint to generate", status_bar=False)
        else:
            self.distribution.clear("Generate, then hover or click a token to see the choice the decoder had "
                                    "at that step.")
            self._refresh_status()
        self.settings_row.set_running(self.is_generating(), model is not None)

    def _model_line(self) -> str:
        config = self.state.config
        if config is None:
            return ""
        tokenizer = self.state.tokenizer
        name = tokenizer.describe() if tokenizer is not None else "no tokenizer"
        return (f"Model: {config.num_params() / 1e6:.2f} M parameters · context {config.context_length:,} · "
                f"{html.escape(name)}")

    def notes(self) -> list[str]:
        """What the tab changed or found on its own, in plain words (shown above the decoders)."""
        notes = []
        if self._training_note:
            notes.append("Training is running. Generate uses the current model (if it is the one being "
                         "fine-tuned, its weights change as it learns); the trained model replaces it when "
                         "training ends.")
        vocab = self.state.config.vocab_size if self.state.config is not None else 0
        for column in self.columns:
            if column.clamped_top_k is not None:
                wanted, given = column.clamped_top_k
                notes.append(f"{column.name}: top-k lowered from {wanted:,} to {given:,}, the size of this "
                             f"model's vocabulary ({vocab:,} tokens).")
        return notes

    def _refresh_status(self) -> None:
        if not hasattr(self, "status") or self.state.model is None:
            return
        parts = [theme.colored(note, "warning") for note in self.notes()]
        parts.append(self._model_line())
        self.status.setText("<br>".join(parts))

    def _model_device(self) -> torch.device:
        model = self.state.model
        try:
            return next(model.parameters()).device if model is not None else torch.device("cpu")
        except StopIteration:
            return torch.device("cpu")

    @Slot(str)
    def _on_other_jobs(self, _name: str = "") -> None:
        """While training runs, Generate still works on the current model; say so (once per change)."""
        training = any("train" in job.name for job in self.runner.running())
        if training == self._training_note:
            return
        self._training_note = training
        self._refresh_status()

    # ---------------------------------------------------------------------------------- prompt

    @Slot()
    def roll_seed(self) -> None:
        self.settings_row.roll_seed()

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
        try:
            stops = self.settings_row.stop_strings()
            configs = [sampling_config(c.settings(), self.max_tokens.value(), self.seed.value(),
                                       chat or self.settings_row.stop_at_eot_on, stops) for c in self.columns]
            check_precision(precision, self._model_device(), use="inference")
            if chat:  # as the engine would cut it: the last context - 1 tokens
                prompt_ids = self.chat.prompt_ids(prompt)[-(model.config.context_length - 1):]
            else:
                prompt_ids = prompt_token_ids(tokenizer, prompt, model.config)
        except ValueError as e:
            self.show_message(f"Cannot generate: {e}")
            return
        self.run = GenerationRun(prompt=prompt, prompt_ids=prompt_ids, precision=precision,
                        ids=[[] for _ in self.columns], records=[[] for _ in self.columns], chat=chat)
        self.steps.cache.clear()
        # The step being looked at stays selected once the new run reaches it (live regenerate).
        self._wanted_selection = self._selection or self._wanted_selection
        self._select(None)
        self._changed_while_running = False
        for column in self.columns:
            column.start_output("" if chat else prompt)
        self.job = self.runner.start(JOB_NAME, generation_job(model, tokenizer, prompt, configs, precision,
                                                              prompt_ids))
        self.job.events.connect(self._on_events)
        self.job.failed.connect(self._on_failed)
        self.job.finished.connect(self._on_finished)
        self.settings_row.set_running(True, True)
        self.speed.setText("…")
        self._update_column_buttons()
        self._refresh_status()
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
            if isinstance(chunk, JobStarted):
                run.timings = [ColumnTiming(started=chunk.time) for _ in self.columns]
                continue
            per_column: list[list[tuple[int, str, float]]] = [[] for _ in self.columns]
            times = chunk.times or (time.perf_counter(),) * len(chunk.events)
            for event, at in zip(chunk.events, times):
                if isinstance(event, GenerationStepEvent):
                    for row, token in run.take_step(event, at):
                        per_column[row].append(token)
                elif isinstance(event, GenerationDoneEvent):
                    run.done = event
                elif isinstance(event, ProgressEvent):  # the engine compiling its decode step first (CUDA)
                    self._show_progress(event)
            for column, tokens in zip(self.columns, per_column):
                if tokens:
                    column.output.append_tokens(tokens)
        elapsed = max(time.monotonic() - run.started, 1e-6)
        self.speed.setText(f"{run.tokens / elapsed:,.1f} tokens/s")
        for i, column in enumerate(self.columns):
            column.set_info(f"{len(run.ids[i]):,} tokens")
        self._restore_selection()

    def _restore_selection(self, final: bool = False) -> None:
        """Select the step that was selected before this run once it exists (at the end: the nearest one)."""
        run = self.run
        if self._selection is not None or run is None or not run.ids:
            return
        wanted = self._wanted_selection
        if wanted is None:
            if run.ids[0]:
                self._select((0, 0))
            return
        col = min(wanted[0], len(run.ids) - 1)
        if len(run.ids[col]) > wanted[1]:
            self._wanted_selection = None
            self._select((col, wanted[1]))
        elif final and run.ids[col]:
            self._wanted_selection = None
            self._select((col, len(run.ids[col]) - 1))

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.show_message(f"Generation failed: {message}")

    @Slot()
    def _on_finished(self) -> None:
        self.job = None
        run = self.run
        self.settings_row.set_running(False, self.state.model is not None)
        self._update_column_buttons()
        if run is not None:
            done = run.done
            elapsed = max(time.monotonic() - run.started, 1e-6)
            speed = done.tokens_per_s if done is not None else run.tokens / elapsed
            self.speed.setText(f"{speed:,.1f} tokens/s")
            for i, column in enumerate(self.columns):
                if i < len(run.ids):
                    reason = STOP_REASONS.get(done.stop_reasons[i], "") if done is not None else "stopped"
                    timing = run.timings[i].describe() if i < len(run.timings) else ""
                    column.set_info(" · ".join(p for p in (f"{len(run.ids[i]):,} tokens", reason, timing) if p))
            self._restore_selection(final=True)
            if self._changed_while_running:
                self._mark_stale()
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

    @Slot()
    def _on_column_settings(self) -> None:
        column = self.sender()
        if self._selection is not None and column is self.columns[self._selection[0]]:
            self.refresh_distribution()
        if isinstance(column, DecoderColumn):
            self._mark_stale(column)
        self._refresh_status()

    @Slot()
    def _on_output_settings_changed(self, *args: Any) -> None:
        """The prompt or a shared setting changed: every column's text is now from other settings."""
        if self.chat.active() and self.sender() is self.prompt:
            return  # in chat mode the box holds the next message: the replies shown answer the last one
        self._mark_stale()

    def _mark_stale(self, column: DecoderColumn | None = None) -> None:
        if self.is_generating():
            self._changed_while_running = True  # said when this run ends
            return
        for c in [column] if column is not None else self.columns:
            if c.output.token_count() > 0:
                c.set_stale(True)

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
        if selection is not None:
            self._wanted_selection = None
        for i, column in enumerate(self.columns):
            column.output.select_step(selection[1] if selection is not None and selection[0] == i else None)
        if selection is not None:
            self.refresh_distribution()

    # ---------------------------------------------------------------------------------- distribution

    def refresh_distribution(self) -> None:
        """Recompute the distribution view for the selected step with its column's current settings."""
        self.steps.refresh()

    @property
    def _logits_cache(self) -> OrderedDict:
        return self.steps.cache

    # ---------------------------------------------------------------------------------- messages

    def _show_progress(self, event: ProgressEvent) -> None:
        """A job step before the tokens (compiling the decode step): said in the tab while it lasts, then the
        model line comes back and the outcome goes to the status bar."""
        if event.total and event.done >= event.total:
            self._refresh_status()
            dialogs.notify(self, event.message, 8000)
        else:
            self.show_message(event.message, status_bar=False)

    def show_message(self, text: str, *, status_bar: bool = True) -> None:
        """One line for the user: in the tab, and in the window's status bar when there is one."""
        self.status.setText(html.escape(text))
        if status_bar:
            dialogs.notify(self, text, 8000)

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)

