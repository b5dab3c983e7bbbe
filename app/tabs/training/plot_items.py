"""The pyqtgraph pieces of the training plots: one run's curve items, how a curve is drawn, axes whose titles
are cheap to keep, and a plot widget that times its own paints (the redraw budget depends on it)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from app.tabs.training.run_data import DebiasedEMA

RAW_ALPHA = 110  # the unsmoothed loss: clearly there, yet under the smoothed line (TensorBoard draws it at ~40%)


@dataclass
class RunCurves:
    """One run's curve items in every plot, and the smoothing of its loss."""

    raw: pg.PlotDataItem
    ema: pg.PlotDataItem
    val: pg.PlotDataItem
    lr: pg.PlotDataItem
    grad: pg.PlotDataItem
    speed: pg.PlotDataItem
    smoother: DebiasedEMA
    drawn_version: int = -1

    @classmethod
    def for_color(cls, color: str, smoothing: float) -> RunCurves:
        curves = cls(
            raw=make_curve(color, width=1.2, alpha=RAW_ALPHA),
            ema=make_curve(color, width=2.2),
            val=make_curve(color, width=1.8, dashed=True, symbol="o"),
            lr=make_curve(color, width=1.8),
            grad=make_curve(color, width=1.2),
            speed=make_curve(color, width=1.2),
            smoother=DebiasedEMA(smoothing),
        )
        curves.raw.setZValue(-1)  # under the smoothed line of every run
        return curves

    def items(self) -> list[pg.PlotDataItem]:
        return [self.raw, self.ema, self.val, self.lr, self.grad, self.speed]


def make_curve(color: str, *, width: float = 1.5, alpha: int = 255, dashed: bool = False,
               symbol: str | None = None) -> pg.PlotDataItem:
    c = QColor(color)
    c.setAlpha(alpha)
    pen = pg.mkPen(c, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
    item = pg.PlotDataItem(pen=pen, symbol=symbol, symbolSize=6, symbolPen=pen if symbol else None,
                           symbolBrush=pg.mkBrush(c) if symbol else None)
    if symbol is None:
        # Long dense curves: only draw what is visible, and at most a few points per pixel.
        item.setClipToView(True)
        item.setDownsampling(auto=True, method="peak")
    return item


class TimedGraphics(pg.GraphicsLayoutWidget):
    """Adds up the time its paints take (the redraw budget depends on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.paint_ms_total = 0.0

    def paintEvent(self, event) -> None:
        start = time.perf_counter()
        super().paintEvent(event)
        self.paint_ms_total += (time.perf_counter() - start) * 1000


class QuietTitle:
    """Mixin for axis items: pyqtgraph sets an axis title's HTML again at every range change (to update its
    SI prefix), which with the plots following a run is every redraw; only a changed title is set. The
    ticks are redrawn either way (pyqtgraph drops their picture here, and nowhere else, on a range change)."""

    def _updateLabel(self) -> None:
        html = self.labelString()
        if html != getattr(self, "_title_html", None):
            self._title_html = html
            super()._updateLabel()
        else:
            self.picture = None
            self.update()


class Axis(QuietTitle, pg.AxisItem):
    pass


class DateAxis(QuietTitle, pg.DateAxisItem):
    pass
