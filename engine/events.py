"""Events that engine jobs yield: frozen snapshots of plain floats, strings and CPU arrays.

The trainer (and other long jobs) never call back into whoever runs them; they yield these, and the
GUI worker, the CLI and the tests decide what to do with each. Nothing here holds a live tensor, so
an event can cross threads safely.

Every event is a subclass of `Event`, and whoever handles events dispatches on the class
(`isinstance`, or `match event: case StepEvent(...)`): a misspelt class is a NameError (and a lint
error), where a misspelt string would have matched nothing, silently. `json_name` is the "event" field
of the command line's `--json` output (an interface: keep each name as it is); it is for serialisation
only. Events that never leave the process (the app's own) have none.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

E = TypeVar("E", bound="Event")
R = TypeVar("R")
_JSON_NAMES: dict[str, type] = {}  # json_name -> the one class that has it


@dataclass(frozen=True)
class Event:
    """Base of every event (see the module docstring)."""

    json_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("json_name")
        if name is not None:  # two classes with one name would make --json output ambiguous
            owner = _JSON_NAMES.setdefault(name, cls)
            if (owner.__module__, owner.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"{cls.__qualname__}: the JSON name {name!r} already belongs to {owner.__qualname__}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with an "event" key naming the class (numpy arrays left out)."""
        if self.json_name is None:
            raise TypeError(f"{type(self).__qualname__} is not written as JSON (it has no json_name)")
        data = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        return {"event": self.json_name, **data}


@dataclass(frozen=True)
class StartedEvent(Event):
    json_name = "started"
    total_steps: int
    start_step: int
    num_params: int
    device: str
    precision: str
    tokens_per_step: int
    model_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepEvent(Event):
    """One optimizer step done."""

    json_name = "step"
    step: int  # steps done so far (1 after the first update)
    total_steps: int
    loss: float  # mean training loss over the step's micro-batches
    lr: float
    grad_norm: float
    tokens_seen: int
    tokens_per_s: float
    mfu: float  # model FLOPs utilisation, 0..1 (0 where the peak is unknown)
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class EvalEvent(Event):
    json_name = "eval"
    step: int
    val_loss: float
    train_loss: float  # mean over eval batches of the training split (less noisy than StepEvent.loss)
    tokens_seen: int


@dataclass(frozen=True)
class SampleEvent(Event):
    json_name = "sample"
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class AttentionProbeEvent(Event):
    """What the model does now, recorded at an evaluation: the attention maps of a fixed probe text (attention
    over training) and, for the Inside tab, each token's loss on a held-out slice of the corpus and the map of
    the token embeddings."""

    json_name = "attention_probe"
    step: int
    tokens: tuple[str, ...]
    maps: np.ndarray  # float32 [n_layers, n_heads, T, T]
    heldout_tokens: tuple[str, ...] = ()  # the start of the validation split, as render_token strings
    heldout_loss: np.ndarray | None = None  # float32 [T]: -ln p(token | the tokens before it); NaN at 0
    embedding_points: np.ndarray | None = None  # float32 [V, 2]: the embedding table's PCA map (small vocabularies)


@dataclass(frozen=True)
class CheckpointEvent(Event):
    json_name = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class ProgressEvent(Event):
    """Progress of a job that isn't training (tokenizer training, a download, encoding)."""

    json_name = "progress"
    job: str
    done: float
    total: float
    message: str = ""


@dataclass(frozen=True)
class FinishedEvent(Event):
    json_name = "finished"
    step: int
    reason: str  # "completed" or "stopped"
    final_loss: float | None = None
    final_val_loss: float | None = None


@dataclass(frozen=True)
class ErrorEvent(Event):
    """The job could not go on. The last good weights are kept by the job's owner."""

    json_name = "error"
    step: int
    message: str  # one line for the user
    hint: str = ""


def run_job(job: Generator[E, None, R], on_event: Callable[[E], None] | None = None) -> R:
    """Drive a job that yields events and returns a result (`result = yield from job` inside another job):
    each event goes to `on_event`, and the job's return value comes back."""
    while True:
        try:
            event = next(job)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)
