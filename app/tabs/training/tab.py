"""The Training tab: choose a model shape, data and settings, press Start, watch it learn.

The tab is a composition of panels, each owning its widgets: on the left, in a scroll area, the model
panel (start from scratch or the current model, the shape), the data panel (corpus and tokenizer)
and the training settings form; on the right the run panel (Start / Pause / Stop, progress) and the
plots panel (curves and the latest sample). The tab runs the training: a run is one TrainingJob in
the JobRunner, held by the app state's training session; its events go to the panels. When the run
ends, its model becomes the app's current model (with its training history, so Save keeps the curves).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt, Signal, Slot
from PySide6.QtWidgets import QFrame, QScrollArea, QSplitter, QVBoxLayout, QWidget

from app import dialogs
from app.jobs.model_io import DEFAULT_MODEL
from app.jobs.training import PreparedEvent, TrainingJob
from app.settings import Settings
from app.state import AppState
from app.tabs.training.boxes import group_box
from app.tabs.training.command_dialog import TorchrunDialog
from app.tabs.training.data_panel import DataPanel
from app.tabs.training.model_panel import ModelPanel
from app.tabs.training.plots_panel import PlotsPanel
from app.tabs.training.run_data import RunData
from app.tabs.training.run_panel import RunPanel
from app.tabs.training.saved_runs import SavedRunsPanel
from app.tabs.training.train_form import TrainSettingsForm
from app.worker import Job, JobRunner
from engine import (
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
)


class TrainingTab(QWidget):
    """See the module docstring. Public: the panels (model_panel, data_panel, train_form, controls,
    plots_panel) and start(), pause(), resume(), stop(), stop_now(), is_running, start_problem()."""

    device_changed = Signal(str)  # the device setting ("auto", "cpu", ...), for the status bar
    running_changed = Signal(bool)

    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.session = state.training
        self._run = None  # the plots' RunData of the run in progress
        self._run_count = 0
        self._adopting = False
        self._adopted = False
        self._stopping = False
        self._error_shown = False
        self._closing = False
        self.model_panel = ModelPanel(state)
        self.data_panel = DataPanel(state, runner)
        self.train_form = TrainSettingsForm()
        self.controls = RunPanel()
        self.plots_panel = PlotsPanel()
        self.saved_runs = SavedRunsPanel(runner, self.plots_panel.plots)
        self._lay_out()
        self._connect()
        self._restore_settings()
        self._on_form_changed()  # the memory estimate for the restored settings, and the controls

    def _lay_out(self) -> None:
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 10, 6)
        left_layout.addWidget(self.model_panel)
        left_layout.addWidget(self.data_panel)
        left_layout.addWidget(group_box("Training", self.train_form))
        left_layout.addStretch(1)
        # The settings scroll, so small screens still reach everything.
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Wide enough for the forms and the scroll bar: nothing is cut off at the right.
        scroll.setMinimumWidth(max(340, left.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()))
        self.settings_scroll = scroll

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 6, 6, 6)
        right_layout.addWidget(self.controls)
        # The saved runs under the plots, in a splitter: as tall as the person wants.
        self.runs_splitter = QSplitter(Qt.Orientation.Vertical)
        self.runs_splitter.addWidget(self.plots_panel)
        self.runs_splitter.addWidget(self.saved_runs)
        self.runs_splitter.setStretchFactor(0, 5)
        self.runs_splitter.setStretchFactor(1, 1)
        self.runs_splitter.setChildrenCollapsible(False)
        right_layout.addWidget(self.runs_splitter, 1)

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

    def _connect(self) -> None:
        self.controls.start_button.clicked.connect(self.start)
        self.controls.pause_button.clicked.connect(self._toggle_pause)
        self.controls.stop_button.clicked.connect(self.stop)
        self.controls.command_button.clicked.connect(self.show_command)
        self.model_panel.changed.connect(self._on_form_changed)
        self.model_panel.fine_tune_changed.connect(self.data_panel.set_fine_tune)
        self.train_form.changed.connect(self._on_form_changed)
        self.train_form.device.currentTextChanged.connect(self.device_changed)
        self.data_panel.changed.connect(self._update_controls)
        self.data_panel.vocab_size_known.connect(self.model_panel.set_vocab_size)
        self.state.model_changed.connect(self._on_model_changed)

    # ================================================================== settings

    def _restore_settings(self) -> None:
        s = Settings()
        preset = s.value("training/preset", "tiny")
        config = s.value("training/model_config", "")
        if config:
            try:
                self.model_panel.form.set_config(ModelConfig.from_dict(json.loads(config)))
            except (ValueError, TypeError, RecursionError):  # a damaged settings file: keep the defaults
                pass
        elif preset:
            self.model_panel.form.preset_combo.setCurrentText(preset)
        train = s.value("training/train_config", "")
        if train:
            try:
                self.train_form.set_values(json.loads(train))
            except (ValueError, TypeError, RecursionError):  # a damaged settings file: keep the defaults
                pass
        self.data_panel.restore_settings(s)
        self.plots_panel.restore_settings(s)
        sizes = s.value("training/splitter", "")
        if sizes:
            try:
                self.splitter.setSizes([int(x) for x in sizes.split(",")])
            except ValueError:
                pass
        self.data_panel.load_chosen_corpus()

    def save_settings(self) -> None:
        s = Settings()
        config = self.model_panel.config()
        if config is not None and not self.model_panel.fine_tune:
            s.set_value("training/model_config", json.dumps(config.to_dict()))
        s.set_value("training/train_config", json.dumps(self.train_form.values()))
        self.data_panel.save_settings(s)
        self.plots_panel.save_settings(s)
        s.set_value("training/splitter", ",".join(str(x) for x in self.splitter.sizes()))

    # ================================================================== starting

    @property
    def is_running(self) -> bool:
        return self.session.running

    @Slot()
    def _on_form_changed(self) -> None:
        config = self.model_panel.config()
        if config is not None:
            self.train_form.set_context_length(config.context_length)
        try:
            train = self.train_form.train_config()
        except ValueError:  # the train form shows why
            train = None
        self.model_panel.set_train_config(train)
        self._update_controls()

    def start_problem(self) -> str | None:
        """Why Start is not possible now (None when it is)."""
        if self.is_running:
            return "a run is in progress"
        if self.runner.running("training"):
            return "another training job is running"
        if self.model_panel.config() is None:
            return self.model_panel.form.error()
        problem = self.train_form.problem()
        if problem:
            return problem
        if self.model_panel.fine_tune and self.state.model is None:
            return "there is no current model to fine-tune"
        problem = self.model_panel.memory_problem()
        if problem:
            return problem
        return self.data_panel.problem()

    @Slot()
    def _update_controls(self) -> None:
        running = self.is_running
        self.controls.set_controls(start_problem=self.start_problem(), running=running, stopping=self._stopping)
        self.settings_scroll.widget().setEnabled(not running)

    def _run_spec(self) -> RunSpec:
        fine_tune = self.model_panel.fine_tune
        return RunSpec(
            self.train_form.train_config(), corpus=self.data_panel.run_corpus(),
            tokenizer=self.data_panel.run_tokenizer(), model_config=None if fine_tune else self.model_panel.config(),
            # A copy is trained (TrainingJob copies it off the GUI thread): other tabs keep reading the model.
            init=self.state.model if fine_tune else None, probe=True)

    @Slot()
    def start(self) -> Job | None:
        problem = self.start_problem()
        if problem is not None:
            dialogs.notify(self, f"Cannot start: {problem}")
            return None
        try:
            spec = self._run_spec()
        except ValueError as e:
            dialogs.show_error(self, "Cannot start training", str(e))
            return None
        self._run_count += 1
        start = "fine-tune" if spec.init is not None else self.model_panel.form.preset_combo.currentText()
        corpus_name = self.data_panel.corpus_combo.currentText()
        name = f"run {self._run_count} · {start} · {corpus_name}"
        self._run = self.plots_panel.plots.start_run(name)
        self.state.set_attention_probes([])
        training = TrainingJob(spec, name, copy_init=True)
        self._adopted = False
        self._stopping = False
        self._closing = False
        self._error_shown = False
        self.plots_panel.clear_sample()
        self.controls.begin()
        job = self.runner.start("training", training.events())
        job.events.connect(self._on_events)
        job.failed.connect(self._on_failed)
        job.paused.connect(self._on_paused)
        job.resumed.connect(self._on_resumed)
        job.finished.connect(self._on_finished)
        self.session.began(training, job)
        self._update_controls()
        self.model_panel.refresh()
        self.running_changed.emit(True)
        return job

    # ================================================================== pause, resume, stop

    @Slot()
    def _toggle_pause(self) -> None:
        job = self.session.job
        if job is None:
            return
        if job.is_paused:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        if self.session.job is not None:
            self.session.job.pause()
            self.controls.pause_button.setText("Resume")
            self.controls.set_message("Pausing after this step…")

    def resume(self) -> None:
        if self.session.job is not None:
            self.session.job.resume()
            self.controls.pause_button.setText("Pause")

    @Slot()
    def stop(self) -> None:
        """Stop: the trainer ends once its current micro-batch is done (no last evaluation or sample)."""
        job, training = self.session.job, self.session.run
        if job is None or training is None:
            return
        self._stopping = True
        if training.trainer is not None:
            training.request_stop()
        else:
            job.stop()  # still preparing data: nothing worth a last evaluation
        if job.is_paused:
            job.resume()
        self.controls.set_message("Stopping…")
        self._update_controls()

    def stop_now(self, wait_ms: int = 8000, adopt: bool = True) -> bool:
        """Closing the window: end the run at the next event boundary, wait for the thread, and (adopt)
        make what was trained the current model. True if the worker ended in time."""
        if self.session.job is None:
            return True
        self._stopping = True
        self._closing = True  # no new jobs (the saved runs' refresh) while the window goes
        self.session.job.stop()
        ended = self.runner.stop_all(wait_ms)
        if ended and adopt:
            self._adopt_model()
        # Deliver the queued signals of the finished job now, so nothing arrives after the window is gone.
        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        return ended

    # ================================================================== events

    @Slot(list)
    def _on_events(self, events: list) -> None:
        last_step = None
        for event in events:
            match event:
                case StepEvent():
                    self._run.add_step(event.step, event.loss, event.lr, event.tokens_seen, event.tokens_per_s,
                                       grad_norm=event.grad_norm, elapsed_s=event.elapsed_s)
                    last_step = event
                case EvalEvent():
                    self._run.add_eval(event.step, event.val_loss, event.tokens_seen)
                    self.controls.show_eval(event.step, event.val_loss, step_pending=last_step is not None)
                case SampleEvent():
                    self.plots_panel.show_sample(event)
                case AttentionProbeEvent():
                    self.state.add_attention_probe(event)
                case StartedEvent():
                    self.controls.show_started(event)
                case PreparedEvent():
                    self.controls.set_message(f"{event.num_tokens:,} tokens · {event.tokenizer} · "
                                              f"{event.num_params:,} parameters")
                    self.model_panel.set_vocab_size(event.vocab_size)
                case ProgressEvent(job="eval"):
                    pass  # evaluations are quick; their end shows as a validation point
                case ProgressEvent():
                    self.controls.show_preparing(event.message)
                case FinishedEvent():
                    self.controls.set_message(
                        f"{'Finished' if event.reason == 'completed' else 'Stopped'} at step {event.step:,}")
                case ErrorEvent():
                    self._show_error_once("Training stopped",
                                          event.message + (f"\n\n{event.hint}" if event.hint else ""))
                case _:
                    raise TypeError(f"unexpected training event {type(event).__name__}")
        if last_step is not None:
            self.controls.add_step(last_step)

    def _show_error_once(self, title: str, message: str) -> None:
        if self._error_shown:
            return
        self._error_shown = True
        dialogs.notify(self, message.splitlines()[0])
        dialogs.show_error(self, title, message)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._show_error_once("Training failed", message)

    @Slot()
    def _on_paused(self) -> None:
        self.controls.flush()
        self.controls.set_message("Paused")
        self.controls.pause_button.setText("Resume")

    @Slot()
    def _on_resumed(self) -> None:
        if not self._stopping:
            self.controls.set_message("Training…")
        self.controls.pause_button.setText("Pause")

    @Slot()
    def _on_finished(self) -> None:
        training = self.session.run
        self._adopt_model()
        self.session.ended()
        self._stopping = False
        plots = self.plots_panel.plots
        if self._run is not None and self._run.num_steps == 0 and not self._run.val_step:
            plots.remove_run(self._run)  # nothing happened (failed while preparing)
        plots.redraw()  # the last points, whatever the paint budget skipped
        trainer = training.trainer if training is not None else None
        self.controls.show_ended(trainer.step if trainer is not None else None)
        if training is not None and training.log_problem:
            dialogs.notify(self, f"This run is not kept in the saved runs: {training.log_problem}", 15000)
        if not self._closing:
            self.saved_runs.refresh()  # the run just ended is listed
        self._update_controls()
        self.model_panel.refresh()
        self.running_changed.emit(False)

    def _adopt_model(self) -> None:
        """The trained model becomes the current one (once per run; nothing if no step was taken)."""
        training = self.session.run
        if training is None or self._adopted or training.trainer is None or training.trained_steps <= 0:
            return
        self._adopted = True
        trainer = training.trainer
        path = self.state.checkpoint_path if training.fine_tune else None
        self._adopting = True
        try:
            self.state.set_model(trainer.model, training.tokenizer, path=path, train_state=trainer.state(),
                                 dirty=True)
        finally:
            self._adopting = False
        self.session.adopted(training)
        dialogs.notify(self, f"The trained model (step {trainer.step:,}) is now the current model: "
                             f"Save (Ctrl+S) keeps it")

    # ================================================================== a model opened from a file

    @Slot()
    def _on_model_changed(self) -> None:
        if self._adopting or self.state.model is None:
            return
        if not self.is_running:  # "Stopped at step 62" was about the run before: not about this model
            self.controls.clear_run_status()
        # Show its shape, settings, data and loss history. The engine validated every field; what the forms
        # cannot hold is clamped and said so. All of it is worked out first and only then applied, so a
        # restore never stops half-way.
        path = self.state.checkpoint_path
        train_state = self.state.train_state or {}
        is_default = path is not None and Path(path).resolve() == DEFAULT_MODEL.resolve()
        restore_settings = path is not None and not is_default
        notes: list[str] = []
        values: dict[str, Any] = {}
        run = None
        try:
            if restore_settings:
                notes += self.model_panel.form.fit_notes(self.state.config)
                if isinstance(train_state.get("train_config"), dict):
                    values, more = self.train_form.fitted_values(train_state["train_config"])
                    notes += more
            history = train_state.get("history")
            if isinstance(history, dict) and history.get("step"):
                name = "default model" if is_default else (Path(path).name if path else "opened model")
                run = RunData.from_history(name, "", history)
        except (TypeError, ValueError, OverflowError) as e:  # the engine's checks should make this unreachable
            dialogs.notify(self, f"The file's training settings could not be restored ({e}); kept the current ones")
            self._update_controls()
            return
        if restore_settings:
            self.model_panel.show_config(self.state.config)
            self.train_form.apply_values(values)
            notes += self.data_panel.show_opened_run(train_state)
        if run is not None:
            self.plots_panel.plots.add_saved_run(run)
        if notes:
            text = "Restored with changes: " + "; ".join(notes)
            self.controls.set_message(text, text)
            dialogs.notify(self, text, 15000)
        self._update_controls()

    # ================================================================== export command

    def command_settings(self) -> tuple[ModelConfig | None, TrainConfig | None, str, Any, str | None]:
        """(model config, train config, corpus, tokenizer spec or the app's Tokenizer, init checkpoint) for the
        Export command."""
        try:
            train = self.train_form.train_config()
        except ValueError:
            train = None
        corpus, tokenizer = self.data_panel.command_data()
        init = None
        if self.model_panel.fine_tune:
            path = self.state.checkpoint_path
            init = str(path.resolve()) if path is not None else None
        return self.model_panel.config(), train, corpus, tokenizer, init

    @Slot()
    def show_command(self) -> None:
        config, train, corpus, tokenizer, init = self.command_settings()
        if config is None or train is None:
            dialogs.show_error(self, "Export command", "Fix the settings first: "
                               + (self.start_problem() or "some values are out of range"))
            return
        problem = None
        if self.model_panel.fine_tune:
            tokenizer = None  # the checkpoint brings its own
            if init is None:
                problem = "save the model first (Ctrl+S): the command fine-tunes from its checkpoint file"
                init = "MODEL.safetensors"
        TorchrunDialog(config, train, corpus, tokenizer, init, self, problem=problem).exec()

