"""Jobs that bring a model or a corpus into the app, or write a model out: open a checkpoint, a Hugging Face
model folder or a cached repo id, the bundled default model, a fresh model, a GPT-2 import, a corpus, save a
checkpoint. Each is a small generator run by the JobRunner, so the window stays responsive while files are read
or written; the last event carries the result to the GUI thread (the worker is done with the objects by then).

Opening never reads the corpus a checkpoint names (a stored path may be anything, even /dev/zero): only
the checkpoint itself, which the engine validates completely before anything is used.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# torch imports its compiler stack (torch._dynamo, ~2 s) on the first call of many functions (nn.init.normal_,
# an optimizer's first step...). Done by a job in a worker thread, that import holds the GIL for hundreds of ms
# at a time and freezes the window; done here, it happens once, at start-up, before the window shows.
import torch._dynamo  # noqa: F401, I001

from app.formatting import format_params
from app.resources import RESOURCES
from engine import (
    GPT,
    PRESETS,
    Corpus,
    Event,
    ModelConfig,
    ProgressEvent,
    Tokenizer,
    get_tokenizer,
    load_checkpoint,
    load_corpus,
    load_corpus_job,
    open_model_job,
    save_checkpoint,
)

DEFAULT_MODEL = RESOURCES / "models" / "default.safetensors"
FALLBACK_CORPUS = "python-docs"


@dataclass(frozen=True)
class ModelLoadedEvent(Event):
    """A model ready to become the current one."""

    model: Any  # engine.model.GPT
    tokenizer: Tokenizer
    path: str | None = None  # the file it came from (None: not saved yet)
    train_state: dict | None = None
    untrained: bool = False
    dirty: bool = False
    note: str = ""  # a line for the status bar
    name: str | None = None  # what to call a model that has no checkpoint file (a folder's repo id or name)
    warning: str = ""  # something the user should know about the file (e.g. its training state is unusable)


@dataclass(frozen=True)
class ModelSavedEvent(Event):
    """A checkpoint was written."""

    path: str


@dataclass(frozen=True)
class CorpusLoadedEvent(Event):
    corpus: Corpus
    distinct_chars: int = 0
    extra: dict = field(default_factory=dict)


def open_checkpoint_job(path: str | Path) -> Iterator[Event]:
    path = Path(path)
    yield ProgressEvent(job="open", done=0, total=1, message=f"Opening {path.name}…")
    ckpt = load_checkpoint(path)
    yield ModelLoadedEvent(ckpt.model, ckpt.tokenizer, str(path), ckpt.train_state, note=f"Opened {path.name}",
                           warning=_state_warning(path.name, ckpt.train_state_problem or ckpt.optimizer_problem))


def _state_warning(name: str, problem: str | None) -> str:
    if not problem:
        return ""
    return (f"{name} opened, but its training state is unusable ({problem}): its settings and curves were not "
            "restored, and it cannot be resumed.")


def save_checkpoint_job(path: str | Path, model: Any, tokenizer: Tokenizer, train_state: dict | None,
                        optimizer: Any = None) -> Iterator[Event]:
    """Write a checkpoint off the GUI thread (atomically: a failure leaves any existing file as it was)."""
    path = Path(path)
    yield ProgressEvent(job="save", done=0, total=1, message=f"Saving {path.name}…")
    save_checkpoint(path, model, tokenizer, train_state=train_state, optimizer=optimizer)
    yield ModelSavedEvent(str(path))


def fresh_model(config: ModelConfig, tokenizer: Tokenizer):
    """Untrained weights of a shape, sized to the tokenizer's vocabulary."""
    return GPT(config.with_changes(vocab_size=tokenizer.vocab_size))


def default_model_job(path: Path = DEFAULT_MODEL) -> Iterator[Event]:
    """The bundled default model; without it, an untrained tiny model on Python's docs (char tokenizer)."""
    loaded = False
    if path.exists():
        try:
            yield from open_checkpoint_job(path)
            loaded = True
        except (ValueError, OSError):
            pass  # a broken default file must not keep the app from starting: fall back below
    if not loaded:
        yield ProgressEvent(job="open", done=0, total=1, message="Building a fresh tiny model…")
        corpus = load_corpus(FALLBACK_CORPUS)
        tokenizer = get_tokenizer("char", corpus.text())
        model = fresh_model(PRESETS["tiny"], tokenizer)
        yield ModelLoadedEvent(model, tokenizer, None, None, untrained=True,
                               note="No trained default model found: starting from an untrained tiny model")
    warm_up_training()


def warm_up_training() -> None:
    """Import what the first training run needs, ahead of time: creating the first torch optimizer
    imports torch._dynamo, which takes seconds. Done in the background after the default model loads,
    so the first Start begins at once."""
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def new_model_job(config: ModelConfig, tokenizer: Tokenizer) -> Iterator[Event]:
    yield ProgressEvent(job="new", done=0, total=1, message="Initialising a new model…")
    yield ModelLoadedEvent(fresh_model(config, tokenizer), tokenizer, None, None, untrained=True,
                           note="New untrained model")


def open_source_job(source: str | Path) -> Iterator[Event]:
    """Any model source (engine.resolve_source: a checkpoint, a Hugging Face folder, a cached repo id), with
    progress while its weights map in. A folder's model keeps its own number format (a bf16 model stays bf16)."""
    opened = yield from _with_name(open_model_job(source), Path(source).name or str(source))
    src = opened.source
    if src.kind == "checkpoint":
        yield ModelLoadedEvent(opened.model, opened.tokenizer, str(src.path), opened.train_state,
                               note=f"Opened {src.name}", warning=_state_warning(src.name, opened.problem))
    else:  # nothing to save: the folder holds it (Save writes a checkpoint)
        yield ModelLoadedEvent(opened.model, opened.tokenizer, None, None, name=src.name,
                               note=f"Opened {src.name} ({format_params(opened.model.num_params())} parameters)")


def _with_name(job, name: str):
    """The engine job's progress events, with the model's name in front; returns the job's result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        total = event.total if event.total else 0
        yield ProgressEvent(job="open", done=event.done, total=total, message=f"Opening {name}: {event.message}…")


def import_hf_job(folder: str | Path) -> Iterator[Event]:
    """A Hugging Face folder as a new, unsaved model in fp32 (File ▸ Import), ready to train and save."""
    folder = Path(folder)
    opened = yield from _with_name(open_model_job(folder, dtype="fp32"), folder.name)
    yield ModelLoadedEvent(opened.model, opened.tokenizer, None, None, dirty=True, name=opened.source.name,
                           note=f"Imported {opened.source.name}: save it to keep it")


def open_corpus_job(source: str) -> Iterator[Event]:
    """A corpus by name or path (a download reports its progress), then CorpusLoadedEvent."""
    yield ProgressEvent(job="corpus", done=0, total=1, message=f"Loading {Path(source).name or source}…")
    corpus = yield from load_corpus_job(source)
    yield CorpusLoadedEvent(corpus, len(set(corpus.text())))
