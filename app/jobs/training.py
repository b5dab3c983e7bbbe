"""One training run as a job: the engine prepares the run (corpus, tokenizer, encoded data, model and
optimizer: engine.prepare_run), then its Trainer runs. Everything slow happens here, in the worker thread.

`TrainingJob` keeps the trainer so the GUI can ask it to stop gracefully (with a last evaluation)
and take its model and state when the run ends. The run's events are also written to its run log (the saved
runs, engine.RunLogWriter); a log that cannot be written leaves the reason in `log_problem`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from engine import Corpus, Event, RunLogWriter, RunSpec, Tokenizer, Trainer, logged, prepare_run


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

    def __init__(self, spec: RunSpec, name: str = "run"):
        self.spec = spec
        self.name = name  # in the saved runs
        self.log: RunLogWriter | None = None
        self._log_problem: str | None = None
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
    def log_problem(self) -> str | None:
        """Why this run is not (fully) kept in the saved runs, if it is not."""
        return self._log_problem or (self.log.problem if self.log is not None else None)

    @property
    def trained_steps(self) -> int:
        return 0 if self.trainer is None else self.trainer.step - self.start_step

    def events(self) -> Iterator[Event]:
        prepared = yield from prepare_run(self.spec)
        self.trainer, self.tokenizer, self.corpus = prepared.trainer, prepared.tokenizer, prepared.corpus
        self.start_step = self.trainer.step
        yield PreparedEvent(self.corpus.name, self.tokenizer.describe(), len(self.trainer.dataset.ids),
                            self.tokenizer.vocab_size, self.trainer.model.num_params())
        try:
            self.log = RunLogWriter.create(self.name, corpus=self.corpus.source or self.corpus.name,
                                           tokenizer=self.trainer.tokenizer_spec)
        except OSError as e:  # the run goes on; the tab says it is not kept
            self._log_problem = str(e)
        yield from logged(self.trainer.run(), self.log)
