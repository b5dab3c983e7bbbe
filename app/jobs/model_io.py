"""Jobs that bring a model or a corpus into the app: open a checkpoint, the bundled default model,
a fresh model, a GPT-2 import, a corpus. Each is a small generator run by the JobRunner, so the
window stays responsive while files are read; the last event carries the result to the GUI thread
(the worker is done with the objects by then).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
    import_hf_folder,
    load_checkpoint,
    load_corpus,
    load_corpus_job,
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


@dataclass(frozen=True)
class CorpusLoadedEvent(Event):
    corpus: Corpus
    distinct_chars: int = 0
    extra: dict = field(default_factory=dict)


def open_checkpoint_job(path: str | Path) -> Iterator[Event]:
    path = Path(path)
    yield ProgressEvent(job="open", done=0, total=1, message=f"Opening {path.name}…")
    ckpt = load_checkpoint(path)
    yield ModelLoadedEvent(ckpt.model, ckpt.tokenizer, str(path), ckpt.train_state, note=f"Opened {path.name}")


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


def import_hf_job(folder: str | Path) -> Iterator[Event]:
    folder = Path(folder)
    yield ProgressEvent(job="import", done=0, total=1, message=f"Importing {folder.name}…")
    model, tokenizer = import_hf_folder(folder)
    yield ModelLoadedEvent(model, tokenizer, None, None, dirty=True, note=f"Imported {folder.name}: save it to keep it")


def open_corpus_job(source: str) -> Iterator[Event]:
    """A corpus by name or path (a download reports its progress), then CorpusLoadedEvent."""
    yield ProgressEvent(job="corpus", done=0, total=1, message=f"Loading {Path(source).name or source}…")
    corpus = yield from load_corpus_job(source)
    yield CorpusLoadedEvent(corpus, len(set(corpus.text())))
