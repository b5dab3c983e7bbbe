"""One training run as a job: the engine prepares the run (corpus, tokenizer, encoded data, model and
optimizer: engine.prepare_run), then its Trainer runs. Everything slow happens here, in the worker thread.

`TrainingJob` keeps the trainer so the GUI can ask it to stop gracefully (with a last evaluation)
and take its model and state when the run ends.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from engine import Corpus, Event, RunSpec, Tokenizer, Trainer, prepare_run


@dataclass(frozen=True)
class PreparedEvent(Event):
    """The data is ready and the trainer built: what the run will use."""

    corpus_name: str
    tokenizer: str  # Tokenizer.describe()
    num_tokens: int
    vocab_size: int
    num_params: int


class TrainingJob:
    """The generator the JobRunner runs, plus handles on what it builds."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.trainer: Trainer | None = None  # once built
        self.tokenizer: Tokenizer | None = None
        self.corpus: Corpus | None = None
        self.start_step = 0

    @property
    def fine_tune(self) -> bool:
        return self.spec.init is not None

    def request_stop(self) -> None:
        """End after the current step with a last evaluation (FinishedEvent "stopped")."""
        if self.trainer is not None:
            self.trainer.request_stop()

    @property
    def trained_steps(self) -> int:
        return 0 if self.trainer is None else self.trainer.step - self.start_step

    def events(self) -> Iterator[Event]:
        prepared = yield from prepare_run(self.spec)
        self.trainer, self.tokenizer, self.corpus = prepared.trainer, prepared.tokenizer, prepared.corpus
        self.start_step = self.trainer.step
        yield PreparedEvent(self.corpus.name, self.tokenizer.describe(), len(self.trainer.dataset.ids),
                            self.tokenizer.vocab_size, self.trainer.model.num_params())
        yield from self.trainer.run()
