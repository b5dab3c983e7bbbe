"""The training plots' x axis: steps, tokens seen, wall time or relative time (as TensorBoard offers).

Each mode names the RunData column the points are placed by (RunData.x), the axis item that labels it and
how the crosshair readout writes a value of it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyqtgraph as pg

from app.formatting import format_si
from app.tabs.training.plot_items import Axis, DateAxis
from app.tabs.training.run_panel import format_duration


@dataclass(frozen=True)
class XMode:
    key: str  # RunData.x(key)
    choice: str  # the combo box entry
    title: str  # the axis title


# In the order of the combo box (its index is what the settings keep: Steps and Tokens seen stay 0 and 1).
X_MODES = (
    XMode("step", "Steps", "step"),
    XMode("tokens", "Tokens seen", "tokens seen"),
    XMode("wall", "Wall time", "wall time"),
    XMode("relative", "Relative time", "time spent training"),
)
X_TOOLTIP = ("x axis: optimizer steps, tokens read so far, the clock time of each step, or the time spent "
             "training.\nRuns opened from a checkpoint keep no times: they show on the step and token axes only.")


class DurationAxis(DateAxis):
    """Seconds from 0 as durations ("0:30", "2:00", "1:15:00"). A date axis at UTC offset 0 already puts the
    ticks at whole seconds, minutes and hours; only its labels (times of day, "00:02") would mislead."""

    def __init__(self) -> None:
        super().__init__(orientation="bottom", utcOffset=0)

    def tickStrings(self, values, scale, spacing) -> list[str]:
        return [format_duration(v) for v in values]


class CountAxis(Axis):
    """Steps and tokens with k / M / G ("1.5k", "100k"): short labels stay apart on the narrow plots."""

    def __init__(self) -> None:
        super().__init__(orientation="bottom")
        self.enableAutoSIPrefix(False)  # the labels carry their own prefix

    def tickStrings(self, values, scale, spacing) -> list[str]:
        return [format_si(v) if abs(v) >= 1000 else f"{v:g}" for v in values]


def make_axis(mode: XMode) -> pg.AxisItem:
    """A bottom axis item for the mode: clock times as times of day, training time as durations."""
    if mode.key == "wall":
        return DateAxis(orientation="bottom")
    if mode.key == "relative":
        return DurationAxis()
    return CountAxis()


def format_x(mode: XMode, value: float) -> str:
    """A value of the axis for the crosshair readout."""
    if not math.isfinite(value):
        return "–"
    if mode.key == "step":
        return f"step {int(value):,}"
    if mode.key == "tokens":
        return f"{format_si(value)} tokens"
    if mode.key == "wall":
        return time.strftime("%H:%M:%S", time.localtime(value))
    return format_duration(value)
