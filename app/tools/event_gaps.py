"""How long the GUI thread leaves its event loop unserved: a 10 ms QTimer that records when it fires.

    with GapProbe() as probe:
        ...drive the window (the event loop must run: qtbot.wait, QEventLoop)...
    probe.max_ms, probe.percentile(99)

A gap is the time between two firings; a window that never blocks shows gaps near the interval.
`spin` and `spin_until` run the real event loop (as app.exec() does) while a script or test waits.
"""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QEventLoop, QObject, Qt, QTimer, Slot

PROBE_MS = 10


def spin(seconds: float) -> None:
    """Run the real event loop for a while."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def spin_until(condition, timeout: float = 120.0) -> None:
    """Run the event loop until condition() holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for the app")
        spin(0.01)


class GapProbe(QObject):
    def __init__(self, interval_ms: int = PROBE_MS, parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.ticks: list[float] = []

    @Slot()
    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def start(self) -> GapProbe:
        self.ticks = [time.perf_counter()]
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.stop()
        self.ticks.append(time.perf_counter())  # a stall at the very end counts too

    def __enter__(self) -> GapProbe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def gaps_ms(self) -> np.ndarray:
        return np.diff(np.asarray(self.ticks)) * 1000.0 if len(self.ticks) > 1 else np.zeros(1)

    @property
    def max_ms(self) -> float:
        return float(self.gaps_ms.max())

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.gaps_ms, q))

    def summary(self) -> str:
        return f"p50 {self.percentile(50):.0f} ms, p99 {self.percentile(99):.0f} ms, max {self.max_ms:.0f} ms"
