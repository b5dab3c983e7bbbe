"""A small plot of the learning-rate schedule a run will follow: linear warm-up, then cosine decay."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QWidget

from app import theme
from engine import TrainConfig, lr_at

MAX_POINTS = 400


def schedule(steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(step, lr) samples of the whole schedule, from the engine's own `lr_at`: at most MAX_POINTS of them,
    plus the end of the warm-up so its corner is drawn sharp."""
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
    xs = np.unique(np.concatenate([np.linspace(0, max(0, steps - 1), min(steps, MAX_POINTS)).round(),
                                   [min(warmup_steps, max(0, steps - 1))]])).astype(int)
    ys = np.array([lr_at(int(s), config) for s in xs])
    return xs, ys


class LRPreview(pg.PlotWidget):
    """Shows the schedule for the current form values before starting."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setMaximumHeight(150)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.setMenuEnabled(False)
        item = self.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.15)
        for name in ("left", "bottom"):
            item.getAxis(name).setStyle(maxTickLevel=0)
        item.getAxis("left").setWidth(48)
        item.setTitle("Learning-rate schedule", size="9pt")
        self.curve = self.plot(pen=pg.mkPen(theme.series_color("lr"), width=2),
                               fillLevel=0, brush=pg.mkBrush(theme.series_color("lr") + "30"))
        self.setToolTip("The learning rate at each step: a linear warm-up, then a cosine decay down to\n"
                        "min_lr_ratio x the peak. Big early steps on random weights can blow up; warm-up avoids it.")
        theme.style_plot_widget(self)

    def set_schedule(self, steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> None:
        try:
            xs, ys = schedule(steps, lr, warmup_steps, min_lr_ratio)
        except ValueError:  # out-of-range settings: the form shows why; draw nothing
            self.curve.setData([], [])
            return
        self.curve.setData(xs, ys)
        self.getPlotItem().setYRange(0, lr * 1.05, padding=0)
        self.getPlotItem().setXRange(0, max(1, steps), padding=0.02)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "curve"):
            theme.style_plot_widget(self)
            self.curve.setPen(pg.mkPen(theme.series_color("lr"), width=2))
            self.curve.setBrush(pg.mkBrush(theme.series_color("lr") + "30"))
        super().changeEvent(event)

