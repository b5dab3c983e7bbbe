"""Events that engine jobs yield: frozen snapshots of plain floats, strings and CPU arrays.

The trainer (and other long jobs) never call back into whoever runs them; they yield these, and the
GUI worker, the CLI and the tests decide what to do with each. Nothing here holds a live tensor, so
an event can cross threads safely.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Event:
    kind = "event"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with an "event" key naming the kind (numpy arrays left out)."""
        data = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        return {"event": self.kind, **data}


@dataclass(frozen=True)
class StartedEvent(Event):
    kind = "started"
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

    kind = "step"
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
    kind = "eval"
    step: int
    val_loss: float
    train_loss: float  # mean over eval batches of the training split (less noisy than StepEvent.loss)
    tokens_seen: int


@dataclass(frozen=True)
class SampleEvent(Event):
    kind = "sample"
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class AttentionProbeEvent(Event):
    """What the model does now, recorded at an evaluation: the attention maps of a fixed probe text (attention
    over training) and, for the Inside tab, each token's loss on a held-out slice of the corpus and the map of
    the token embeddings."""

    kind = "attention_probe"
    step: int
    tokens: tuple[str, ...]
    maps: np.ndarray  # float32 [n_layers, n_heads, T, T]
    heldout_tokens: tuple[str, ...] = ()  # the start of the validation split, as render_token strings
    heldout_loss: np.ndarray | None = None  # float32 [T]: -ln p(token | the tokens before it); NaN at 0
    embedding_points: np.ndarray | None = None  # float32 [V, 2]: the embedding table's PCA map (small vocabularies)


@dataclass(frozen=True)
class CheckpointEvent(Event):
    kind = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class ProgressEvent(Event):
    """Progress of a job that isn't training (tokenizer training, a download, encoding)."""

    kind = "progress"
    job: str
    done: float
    total: float
    message: str = ""


@dataclass(frozen=True)
class FinishedEvent(Event):
    kind = "finished"
    step: int
    reason: str  # "completed" or "stopped"
    final_loss: float | None = None
    final_val_loss: float | None = None


@dataclass(frozen=True)
class ErrorEvent(Event):
    """The job could not go on. The last good weights are kept by the job's owner."""

    kind = "error"
    step: int
    message: str  # one line for the user
    hint: str = ""
