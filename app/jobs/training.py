"""One training run as a job: the engine prepares the run (corpus, tokenizer, encoded data, model and
optimizer: engine.prepare_run), then its Trainer runs. Everything slow happens here, in the worker thread.

`TrainingJob` keeps the trainer so the GUI can ask it to stop (within a micro-batch, with no last evaluation)
and take its model and state when the run ends. Fine-tuning trains a copy of the current model (other tabs
keep reading it meanwhile); the copy is made here too, since a 0.5 GB model takes a second to copy. The run's
events are also written to its run log (the saved runs, engine.RunLogWriter); a log that cannot be written
leaves the reason in `log_problem`.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from engine import GPT, Corpus, Event, ProgressEvent, RunLogWriter, RunSpec, Tokenizer, Trainer, logged, prepare_run


def copy_model(model: GPT) -> GPT:
    """A deep copy whose tensors are copied by torch's clone, which lets go of the GIL while it copies (a
    plain deepcopy copies buffers through their storages, holding it), so the window stays responsive.
    Shared tensors (a tied head) stay shared: the memo maps each one to one clone."""
    memo: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for p in model.parameters():
            memo[id(p)] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
        for b in model.buffers():
            memo[id(b)] = b.clone()
    return copy.deepcopy(model, memo)


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

    def __init__(self, spec: RunSpec, name: str = "run", *, copy_init: bool = False):
        """name: the run's name in the saved runs; copy_init: train a copy of `spec.init` (a GPT), made in the
        worker thread, not the model itself."""
        self.spec = spec
        self.name = name
        self.copy_init = copy_init
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
        """End once the current micro-batch is done, with no last evaluation (FinishedEvent "stopped")."""
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
        spec = self.spec
        if self.copy_init and isinstance(spec.init, GPT):
            yield ProgressEvent(job="prepare", done=0, total=0, message="Copying the model…")
            spec = replace(spec, init=copy_model(spec.init))
        prepared = yield from prepare_run(spec)
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
