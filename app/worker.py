"""The one bridge between the GUI and the engine: run engine jobs off the GUI thread.

An engine job is a generator that yields events (see engine/events.py). `JobRunner.start` runs it
in a worker thread from superqt's generator workers, which check pause / abort between yields.
Events are batched for ~100 ms before they cross to the GUI thread as one queued signal, so a fast
job cannot flood the event loop. Teardown always happens on `finished`; exceptions arrive as a
one-line message on `failed`, never as a traceback on the console.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from superqt.utils import GeneratorWorker

from engine import StepEvent

BATCH_SECONDS = 0.1


class _Gate:
    """Pause / stop flags checked by the worker thread between every two engine events."""

    def __init__(self) -> None:
        self.stop_requested = False
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self) -> None:
        while not self._running.wait(0.05):
            if self.stop_requested:
                return


def _batched(job: Iterable[Any], gate: _Gate, on_pause: Callable[[], None],
             on_resume: Callable[[], None]) -> Iterator[list[Any]]:
    """Run the job, grouping its events into lists flushed every BATCH_SECONDS (or at once for rare
    events), and honour pause / stop between every two events."""
    batch: list[Any] = []
    last = time.monotonic()
    iterator = _errors_as_job_errors(iter(job))
    error: Exception | None = None
    try:
        for event in iterator:
            batch.append(event)
            now = time.monotonic()
            if _is_urgent(event) or now - last >= BATCH_SECONDS:
                yield batch
                batch, last = [], now
            if gate.paused and not gate.stop_requested:
                if batch:
                    yield batch
                    batch = []
                on_pause()
                gate.wait_while_paused()
                on_resume()
            if gate.stop_requested:
                break
    except Exception as exc:  # deliver the events that came before the failure, then report it
        error = exc
    finally:
        iterator.close()  # runs the job's own finally blocks
    if batch:
        yield batch
    if error is not None:
        raise error


class JobError(Exception):
    """An engine job failed. superqt's worker takes a bare RuntimeError (which torch raises for
    most failures) for "the worker was deleted" and drops it silently, so errors cross as this."""


def _errors_as_job_errors(iterator: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from iterator
    except RuntimeError as exc:
        raise JobError(error_message(exc)) from exc


def _is_urgent(event: Any) -> bool:
    # Step events come fast and are batched; anything rarer (eval, sample, finished...) goes at once.
    return not isinstance(event, StepEvent)


MAX_MESSAGE_CHARS = 500


def error_message(exc: BaseException) -> str:
    """A one-line message for the user (cut short: it may quote a huge value from a file)."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    if not text:
        text = type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class Job(QObject):
    """One running engine job. Signals arrive on the GUI thread."""

    events = Signal(list)  # a batch of engine events
    failed = Signal(str)  # a one-line error message
    paused = Signal()
    resumed = Signal()
    finished = Signal()  # always fires last, after success, stop or failure

    def __init__(self, name: str, job: Iterable[Any], parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self.running = False
        self._gate = _Gate()
        # Signals emitted from the worker thread on this GUI-thread object are queued by Qt.
        self._worker = GeneratorWorker(
            lambda: (yield from _batched(job, self._gate, self.paused.emit, self.resumed.emit))
        )
        self._worker.yielded.connect(self._on_yielded)
        self._worker.errored.connect(self._on_errored)
        self._worker.finished.connect(self._on_finished)

    def start(self) -> None:
        self.running = True
        self._worker.start()

    def pause(self) -> None:
        self._gate.pause()

    def resume(self) -> None:
        self._gate.resume()

    @property
    def is_paused(self) -> bool:
        return self._gate.paused

    def stop(self) -> None:
        """Ask the job to end after its current step (cooperative: no thread is killed)."""
        self._gate.stop_requested = True
        self._gate.resume()

    @Slot(object)
    def _on_yielded(self, batch: Any) -> None:
        if batch:
            self.events.emit(batch)

    @Slot(object)
    def _on_errored(self, exc: BaseException) -> None:
        self.failed.emit(error_message(exc))

    @Slot()
    def _on_finished(self) -> None:
        self.running = False
        self.finished.emit()


class JobRunner(QObject):
    """Starts jobs and keeps them alive until they finish; the window waits on it when closing."""

    job_started = Signal(str)
    job_finished = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._jobs: list[Job] = []

    def start(self, name: str, job: Iterable[Any]) -> Job:
        """Run `job` (an iterable of engine events, usually a generator) off the GUI thread.

        Connect to the returned Job's signals right away: nothing is emitted before the event loop runs.
        """
        handle = Job(name, job, self)
        self._jobs.append(handle)
        # A bound slot, not a lambda holding the handle: a closure that owns the last reference to a
        # QObject being deleted crashes PySide inside ~QObject.
        handle.finished.connect(self._on_job_finished)
        handle.start()
        self.job_started.emit(name)
        return handle

    @Slot()
    def _on_job_finished(self) -> None:
        handle = self.sender()
        if isinstance(handle, Job):
            self._forget(handle)

    def _forget(self, handle: Job) -> None:
        if handle in self._jobs:
            self._jobs.remove(handle)
        self.job_finished.emit(handle.name)
        handle.deleteLater()

    def running(self, name: str | None = None) -> list[Job]:
        return [j for j in self._jobs if j.running and (name is None or j.name == name)]

    def stop_all(self, wait_ms: int = 5000) -> bool:
        """Stop every job and wait for their threads; True if all ended in time."""
        for job in list(self._jobs):
            job.stop()
        return QThreadPool.globalInstance().waitForDone(wait_ms)
