"""Preparing a training run: the one way the command line and the app build one.

`prepare_run(RunSpec(...))` is a job: it yields ProgressEvents while it loads the corpus (downloading
it once), builds or trains the tokenizer (any spec the command line accepts: char, bpe:N,
bpe:N:cl100k, a tokenizer file, a named encoding) and encodes the corpus, and returns a PreparedRun
whose Trainer holds the model (new, fine-tuned or resumed exactly) and its optimizer:

    prepared = yield from prepare_run(spec)          # inside another job
    prepared = run_job(prepare_run(spec), on_event)  # from plain code

Everything the user can get wrong (a corpus, a tokenizer, a shape, a precision) fails here with a
one-line ValueError, before any training step.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from engine.checkpoint import Checkpoint
from engine.config import ModelConfig, TrainConfig
from engine.data import Corpus, Dataset, load_corpus_job
from engine.events import ProgressEvent
from engine.model import GPT
from engine.tokenizers import BPETrainedEvent, Tokenizer, get_tokenizer, parse_bpe_spec, train_bpe_job
from engine.training import distributed
from engine.training.distributed import DistContext
from engine.training.trainer import Trainer, corpus_probe_ids

PREPARE_STEPS = 3  # loading the corpus, building the tokenizer, tokenizing


@dataclass
class RunSpec:
    """What a run is built from. Exactly one way to get the model: `model_config` (new weights), `init`
    (fine-tune these weights) or `resume` (continue a saved run exactly)."""

    train_config: TrainConfig
    corpus: Corpus | str | None = None  # a loaded corpus, a corpus name or a path; None: resume's own
    tokenizer: Tokenizer | str | None = None  # a ready tokenizer or a spec; None: "char", or init's / resume's
    model_config: ModelConfig | None = None  # a new model's shape (its vocab_size follows the tokenizer)
    init: GPT | Checkpoint | None = None  # fine-tune: these weights are trained (in place: pass a copy to keep them)
    resume: Checkpoint | None = None
    probe: bool = False  # record attention maps of the corpus's first tokens at every evaluation (corpus_probe_ids)
    dist: DistContext | None = None  # this process's place in a torchrun job


@dataclass
class PreparedRun:
    trainer: Trainer
    corpus: Corpus
    tokenizer: Tokenizer
    tokenizer_spec: str | None  # how the tokenizer was asked for (kept in the checkpoint), if known


def prepare_run(spec: RunSpec) -> Generator[ProgressEvent, None, PreparedRun]:
    """Build the run `spec` describes (see the module docstring)."""
    starts = [spec.model_config is not None, spec.init is not None, spec.resume is not None]
    if sum(starts) != 1:
        raise ValueError("a run starts from exactly one of: a new model's shape, weights to fine-tune, "
                         "or a checkpoint to resume")
    model, tokenizer, saved_spec = _starting_point(spec)
    # Under torchrun, one process fills each cache (download, named encoding, token ids) and the others
    # then read it; the Trainer is built after, by all processes together (its setup talks to the others).
    with distributed.main_first(spec.dist):
        corpus = yield from _corpus(spec)
        if tokenizer is None:
            name = spec.tokenizer if isinstance(spec.tokenizer, str) else "char"
            tokenizer = yield from _tokenizer(name, corpus)
            saved_spec = name
        elif isinstance(spec.tokenizer, Tokenizer):
            saved_spec = None  # a ready tokenizer: the checkpoint names it by its own name
        config = model.config if model is not None else spec.model_config.with_changes(
            vocab_size=tokenizer.vocab_size)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"the tokenizer ({tokenizer.vocab_size:,} tokens) does not fit the model "
                             f"(vocab_size {config.vocab_size:,})")
        yield ProgressEvent(job="prepare", done=2, total=PREPARE_STEPS, message=f"Tokenizing {corpus.name}…")
        dataset = Dataset.build(corpus, tokenizer, config.context_length)
    probe = corpus_probe_ids(corpus, tokenizer, config.context_length) if spec.probe else None
    trainer = Trainer(config, spec.train_config, dataset, model=model if spec.resume is None else None,
                      resume=spec.resume, probe_ids=probe, tokenizer_spec=saved_spec, dist=spec.dist)
    return PreparedRun(trainer, corpus, tokenizer, saved_spec)


def _starting_point(spec: RunSpec) -> tuple[GPT | None, Tokenizer | None, str | None]:
    """(model, tokenizer, tokenizer spec) that the run starts from; None where they are still to build."""
    if spec.resume is not None or isinstance(spec.init, Checkpoint):
        source = spec.resume if spec.resume is not None else spec.init
        if isinstance(spec.tokenizer, str):
            raise ValueError("a checkpoint keeps its own tokenizer; another one cannot be given")
        state = source.train_state or {}
        saved = state.get("tokenizer_spec")
        return source.model, source.tokenizer, saved if isinstance(saved, str) else None
    if spec.init is not None:
        if not isinstance(spec.tokenizer, Tokenizer):
            raise ValueError("fine-tuning a model needs its tokenizer")
        return spec.init, spec.tokenizer, None
    if isinstance(spec.tokenizer, Tokenizer):
        return None, spec.tokenizer, None
    return None, None, None


def _corpus(spec: RunSpec) -> Generator[ProgressEvent, None, Corpus]:
    source = spec.corpus
    if isinstance(source, Corpus):
        return source
    if source is None:
        saved = (spec.resume.train_state or {}).get("corpus") if spec.resume is not None else None
        if not isinstance(saved, str) or not saved:
            raise ValueError("a corpus is needed")
        source = saved
    yield ProgressEvent(job="prepare", done=0, total=PREPARE_STEPS, message=f"Loading corpus {source}…")
    return (yield from load_corpus_job(source))


def _tokenizer(name: str, corpus: Corpus) -> Generator[ProgressEvent, None, Tokenizer]:
    yield ProgressEvent(job="prepare", done=1, total=PREPARE_STEPS, message=f"Building tokenizer {name}…")
    bpe = parse_bpe_spec(name)
    if bpe is None:
        return get_tokenizer(name, corpus.text())
    for event in train_bpe_job(corpus.text(), bpe[0], bpe[1]):  # trained here, to report its progress
        if isinstance(event, BPETrainedEvent):
            return event.tokenizer
        yield event
    raise ValueError("BPE training ended without a tokenizer")
