"""One training run as a job: load the corpus, build or train the tokenizer, encode the dataset,
then hand over to the engine's Trainer. Everything slow happens here, in the worker thread.

`TrainingJob` keeps the trainer so the GUI can ask it to stop gracefully (with a last evaluation)
and take its model and state when the run ends.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine import (
    Corpus,
    Dataset,
    Event,
    ModelConfig,
    ProgressEvent,
    Tokenizer,
    TrainConfig,
    Trainer,
    corpus_probe_ids,
    get_tokenizer,
    load_corpus,
    train_bpe_job,
)


@dataclass(frozen=True)
class PreparedEvent(Event):
    """The data is ready and the trainer built: what the run will use."""

    kind = "prepared"
    corpus_name: str
    tokenizer: str  # Tokenizer.describe()
    num_tokens: int
    vocab_size: int
    num_params: int


@dataclass
class TrainingRequest:
    model_config: ModelConfig
    train_config: TrainConfig
    corpus: Corpus | str  # a loaded corpus, or a built-in name / path to load
    tokenizer_spec: str = "char"  # char | bpe:N | gpt2 | ... | a tokenizer file
    tokenizer: Tokenizer | None = None  # a ready tokenizer (fine-tuning, the Tokenizer tab's): wins over the spec
    init_model: Any = None  # engine.model.GPT to fine-tune (a copy is trained)
    probe: bool = True
    extra: dict = field(default_factory=dict)


def build_tokenizer(spec: str, corpus: Corpus) -> Iterator[Event | Tokenizer]:
    """Yields progress events, then the tokenizer itself last (BPE training reports progress)."""
    if spec.startswith("bpe:"):
        size = int(spec.split(":", 1)[1])
        tokenizer = None
        for event in train_bpe_job(corpus.text(), size):
            if getattr(event, "kind", "") == "bpe_trained":
                tokenizer = event.tokenizer
            else:
                yield event
        if tokenizer is None:
            raise ValueError("BPE training ended without a tokenizer")
        yield tokenizer
        return
    yield get_tokenizer(spec, corpus.text())


class TrainingJob:
    """The generator the JobRunner runs, plus handles on what it builds."""

    def __init__(self, request: TrainingRequest):
        self.request = request
        self.trainer: Any = None  # engine.trainer.Trainer once built
        self.tokenizer: Tokenizer | None = None
        self.corpus: Corpus | None = None
        self.start_step = 0
        self._stop = False

    def request_stop(self) -> None:
        """End after the current step with a last evaluation (FinishedEvent "stopped")."""
        self._stop = True
        if self.trainer is not None:
            self.trainer.request_stop()

    @property
    def trained_steps(self) -> int:
        return 0 if self.trainer is None else self.trainer.step - self.start_step

    def events(self) -> Iterator[Event]:
        req = self.request
        total = 3
        corpus = req.corpus
        if not isinstance(corpus, Corpus):
            yield ProgressEvent(job="prepare", done=0, total=total, message=f"Loading corpus {corpus}…")
            corpus = load_corpus(corpus)
        self.corpus = corpus
        if self._stop:
            return
        if req.tokenizer is not None:
            tokenizer = req.tokenizer
        else:
            yield ProgressEvent(job="prepare", done=1, total=total, message=f"Building tokenizer {req.tokenizer_spec}…")
            tokenizer = None
            for item in build_tokenizer(req.tokenizer_spec, corpus):
                if isinstance(item, Tokenizer):
                    tokenizer = item
                else:
                    yield item
                if self._stop:
                    return
        self.tokenizer = tokenizer
        yield ProgressEvent(job="prepare", done=2, total=total, message=f"Tokenizing {corpus.name}…")
        if self._stop:
            return
        config = req.model_config
        model = None
        if req.init_model is not None:
            # Train a copy: other tabs may still be reading the current model while this runs.
            model = copy.deepcopy(req.init_model)
            config = model.config
        else:
            config = config.with_changes(vocab_size=tokenizer.vocab_size)
        dataset = Dataset.build(corpus, tokenizer, config.context_length)
        # attention over training: the first tokens of the corpus's sample passage
        probe = corpus_probe_ids(corpus, tokenizer, config.context_length) if req.probe else None
        spec = req.tokenizer_spec if req.tokenizer is None else None
        self.trainer = Trainer(config, req.train_config, dataset, model=model, probe_ids=probe,
                               tokenizer_spec=spec)
        self.start_step = self.trainer.step
        yield PreparedEvent(corpus.name, tokenizer.describe(), len(dataset.ids), tokenizer.vocab_size,
                            self.trainer.model.num_params())
        if self._stop:
            return
        yield from self.trainer.run()
