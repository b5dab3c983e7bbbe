"""The Inside tab's session: the text as tokens, and the one analysis job running at a time.

Panels never start threads themselves: they hand an engine job (a generator of progress events ending with
its result) to `InsideSession.start`, which runs it through the app's JobRunner, turns its progress events
into the tab's progress bar, passes the result to the panel, and lets the Stop button end it between steps.
A result that arrives after the model changed is dropped (it describes the old weights).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from app.state import AppState
from app.worker import Job, JobRunner
from engine import ProgressEvent

JOB_NAME = "inside"


@dataclass(frozen=True)
class TextTokens:
    """The text the analyses run on, as the model reads it."""

    ids: tuple[int, ...]
    pieces: tuple[str, ...]  # each token's own text (shown in tinted text)
    labels: tuple[str, ...]  # render_token strings (escaped: shown in headers and lists)
    truncated_from: int = 0  # token count before cutting to the context (0: not cut)


def encode_text(tokenizer: Any, text: str, context_length: int) -> TextTokens:
    # No token is shorter than one byte, so this cut never loses tokens that fit the context.
    ids = list(tokenizer.encode(text[:context_length * 64]))
    truncated_from = len(ids) if len(ids) > context_length else 0
    ids = ids[:context_length]
    return TextTokens(ids=tuple(ids),
                      pieces=tuple(tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in ids),
                      labels=tuple(tokenizer.render_token(i) for i in ids), truncated_from=truncated_from)


class InsideSession(QObject):
    busy_changed = Signal(bool)
    progress = Signal(float, float, str)  # done, total, message
    message = Signal(str)  # one line for the tab's status

    def __init__(self, state: AppState, runner: JobRunner, text: Callable[[], str], parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self._text = text
        self._job: Job | None = None
        self._on_result: Callable[[Any], None] | None = None
        self._model: Any = None
        self._stopping = False
        self._failed = False
        self._done = ""
        self.last_tokens: TextTokens | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None

    def tokens(self) -> TextTokens | None:
        """The text box as tokens of the current model, or None (and a message saying why)."""
        model, tokenizer = self.state.model, self.state.tokenizer
        if model is None or tokenizer is None:
            self.message.emit("No model yet: train one in the Training tab or open a checkpoint.")
            return None
        text = self._text()
        if not text.strip():
            self.message.emit("Type some text to run the model on.")
            return None
        tokens = encode_text(tokenizer, text, model.config.context_length)
        if not tokens.ids:
            self.message.emit("The text gave no tokens.")
            return None
        self.last_tokens = tokens
        return tokens

    def start(self, what: str, job: Iterable[Any], on_result: Callable[[Any], None], done: str = "Done.") -> bool:
        """Run `job` off the GUI thread; `on_result` gets each non-progress event and may set the status line
        (else it says `done` when the job ends). False if one is running."""
        if self._job is not None:
            self.message.emit("Another analysis is running: stop it first.")
            return False
        self._stopping = self._failed = False
        self._done = done
        self._on_result = on_result
        self._model = self.state.model
        self._job = self.runner.start(JOB_NAME, job)
        self._job.events.connect(self._on_events)
        self._job.failed.connect(self._on_failed)
        self._job.finished.connect(self._on_finished)
        self.progress.emit(0, 0, what)
        self.busy_changed.emit(True)
        return True

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._stopping = True
            self._job.stop()
            self.progress.emit(0, 0, "Stopping…")

    @Slot(list)
    def _on_events(self, events: list) -> None:
        if self._stopping:
            return
        for event in events:
            if isinstance(event, ProgressEvent):
                self.progress.emit(float(event.done), float(event.total), event.message)
            elif self.state.model is self._model and self._on_result is not None:
                self.message.emit(self._done)
                self._done = ""
                self._on_result(event)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._failed = True
        self.message.emit(f"The analysis failed: {message}")

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        self._on_result = None
        self._model = None
        if self._stopping:
            self.message.emit("Stopped.")
        elif self._done and not self._failed:  # ended without a result (the model changed meanwhile)
            self.message.emit("The model changed during the analysis: run it again.")
        self.busy_changed.emit(False)
