"""The command line's one progress display: a line redrawn in place on a terminal, nothing extra when piped.

`ProgressLine` owns the line: redraws at most every REDRAW_S (a terminal repaint is not free), and prints
ordinary lines above it. `progress_bar` draws the `[####....]` part. `ProgressPrinter` shows the engine's
ProgressEvents (corpus downloads, BPE training, preparing a run); commands pass it as
`load_corpus(name, progress=...)` or call it with each event of a job.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from engine.events import ProgressEvent

REDRAW_S = 0.1
SPINNER = "|/-\\"


def progress_bar(fraction: float, width: int = 30) -> str:
    """`[#####.....]` filled to `fraction` (clipped to 0..1)."""
    filled = int(width * min(1.0, max(0.0, fraction)))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class ProgressLine:
    """One line on `stream` (default: standard error) redrawn with a carriage return.

    Drawn only on a terminal: piped output gets the lines of `print` alone, never a half-drawn bar.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr  # looked up now, not at import: tests and torchrun replace it
        self.tty = self.stream.isatty()
        self._open = False  # a progress line is on screen and the cursor is at its end
        self._width = 0
        self._drawn_at = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        """Redraw the line with `text` (at most every REDRAW_S, unless `force`: the last state of a job)."""
        if not self.tty:
            return
        now = time.monotonic()
        if self._open and not force and now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        text = text[: max(20, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))  # blank what is left of a longer line
        self.stream.flush()
        self._width = len(text)
        self._open = True

    def print(self, text: str) -> None:
        """A line of its own (on terminals and pipes alike), below a progress line that stays on screen."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Leave the progress line on screen and move to the next line."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open, self._width = False, 0

    def clear(self) -> None:
        """Erase the progress line (a job that is over and needs no trace)."""
        if self._open:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._open, self._width = False, 0


class ProgressPrinter:
    """Shows ProgressEvents on a ProgressLine: a bar and a percentage, or a spinner while the amount is unknown
    (total 0). Call it with each event; `close()` erases the line when the job is over."""

    def __init__(self, line: ProgressLine | None = None):
        self.line = line or ProgressLine()
        self._ticks = 0

    def __call__(self, event: ProgressEvent) -> None:
        self._ticks += 1
        if event.total > 0:
            fraction = min(1.0, event.done / event.total)
            self.line.show(f"{progress_bar(fraction)} {100 * fraction:5.1f}%  {event.message}",
                           force=event.done >= event.total)
        else:
            self.line.show(f"[{SPINNER[self._ticks % len(SPINNER)]}] {event.message}")

    def close(self) -> None:
        self.line.clear()
