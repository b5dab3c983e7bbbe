"""The one shared state of the window: current model, tokenizer, corpus and checkpoint path, and the
training session.

Tabs read from it and listen to its signals instead of talking to each other. Only the GUI thread
touches it; jobs get copies or read-only references when they start.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.jobs.training import TrainingJob
from app.worker import Job
from engine import GPT, Corpus, ModelConfig, Tokenizer


class TrainingSession:
    """The app's training run, held here rather than by the Training tab that shows it: the run in
    progress (its job and worker handle, for whoever must know whether training runs) and the trainer
    whose model became the current model, so File ▸ Save can write that model's optimizer state next
    to it (an exact resume)."""

    def __init__(self) -> None:
        self.run: TrainingJob | None = None  # the run in progress
        self.job: Job | None = None  # its worker: pause, resume, stop, and its signals
        self._trainer: Any = None  # engine Trainer of the run whose model was adopted

    @property
    def running(self) -> bool:
        return self.job is not None

    def began(self, run: TrainingJob, job: Job) -> None:
        self.run, self.job = run, job

    def ended(self) -> None:
        """The run is over: let it go (its starting model, data and, unless adopted, its trainer)."""
        self.run, self.job = None, None

    def adopted(self, run: TrainingJob) -> None:
        """The run's model became the current model."""
        self._trainer = run.trainer

    def model_replaced(self, model: Any) -> None:
        """Another model became the current one: the adopted run's trainer (its model, gradients and AdamW
        moments, three times the weights) is kept only while its model is the current one."""
        if self._trainer is not None and self._trainer.model is not model:
            self._trainer = None

    def optimizer_for(self, model: Any) -> Any:
        """The optimizer that trained `model`, if it is the model of the last adopted run (None otherwise)."""
        trainer = self._trainer
        return trainer.optimizer if trainer is not None and trainer.model is model else None


class AppState(QObject):
    model_changed = Signal()  # model (and with it tokenizer and config) replaced or retrained
    tokenizer_changed = Signal()
    corpus_changed = Signal()
    path_changed = Signal()  # checkpoint path or unsaved marker changed
    pending_tokenizer_changed = Signal()  # a tokenizer chosen for the *next* model (Tokenizer tab)
    attention_probes_changed = Signal()  # attention maps of the probe text recorded during training

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.model: GPT | None = None
        self.tokenizer: Tokenizer | None = None
        self.corpus: Corpus | None = None
        self.checkpoint_path: Path | None = None
        self.source_name: str | None = None  # a model without a checkpoint file: its folder's repo id or name
        self.dirty = False  # weights changed since the last save
        self.untrained = False  # freshly initialised weights (the status bar says so)
        # Training state to save with the model: step, train config, loss history, ...
        self.train_state: dict[str, Any] | None = None
        # A tokenizer handed over by the Tokenizer tab for the next model trained from scratch.
        self.pending_tokenizer: Tokenizer | None = None
        # engine.events.AttentionProbeEvent list from the last training run (attention over training).
        self.attention_probes: list[Any] = []
        self.training = TrainingSession()

    @property
    def config(self) -> ModelConfig | None:
        return self.model.config if self.model is not None else None

    def set_model(self, model: GPT, tokenizer: Tokenizer, *, path: Path | None = None,
                  train_state: dict[str, Any] | None = None, dirty: bool = False,
                  untrained: bool = False, name: str | None = None) -> None:
        """Make this the current model; every tab refreshes. name: what to call it when it has no file."""
        model.eval()
        self.training.model_replaced(model)
        self.model = model
        self.tokenizer = tokenizer
        self.train_state = train_state
        self.checkpoint_path = Path(path) if path is not None else None
        self.source_name = name
        self.dirty = dirty
        self.untrained = untrained
        self.tokenizer_changed.emit()
        self.model_changed.emit()
        self.path_changed.emit()

    def mark_trained(self, train_state: dict[str, Any] | None) -> None:
        """The current model's weights were changed in place by training."""
        self.train_state = train_state
        self.dirty = True
        self.untrained = False
        self.model_changed.emit()
        self.path_changed.emit()

    def mark_saved(self, path: Path) -> None:
        self.checkpoint_path = Path(path)
        self.dirty = False
        self.path_changed.emit()

    def set_corpus(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.corpus_changed.emit()

    def set_pending_tokenizer(self, tokenizer: Tokenizer | None) -> None:
        self.pending_tokenizer = tokenizer
        self.pending_tokenizer_changed.emit()

    def set_attention_probes(self, probes: list[Any]) -> None:
        self.attention_probes = list(probes)
        self.attention_probes_changed.emit()

    def add_attention_probe(self, probe: Any) -> None:
        self.attention_probes.append(probe)
        self.attention_probes_changed.emit()

    @property
    def display_name(self) -> str:
        name = self.checkpoint_path.name if self.checkpoint_path else self.source_name or "untitled"
        return name + (" *" if self.dirty else "")
