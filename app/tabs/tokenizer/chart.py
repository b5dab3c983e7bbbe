"""A small horizontal bar chart: bytes per token of each encoding on one text (more = better compression)."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QWidget

from app.theme import palette_colours

BAR_COLOUR = "#4C9BE8"


class BytesPerTokenChart(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        plot = self.getPlotItem()
        plot.setLabel("bottom", "bytes per token")
        plot.getAxis("left").setStyle(tickLength=0)
        plot.invertY(True)  # the first encoding on top, as in the list
        self._bars: pg.BarGraphItem | None = None
        self._labels: list[pg.TextItem] = []
        self.values: list[tuple[str, float]] = []
        self._title = ""
        self.setMinimumHeight(140)
        self._restyle()
        self.set_values([], "measuring…")

    def _restyle(self) -> None:
        bg, fg = palette_colours(self)
        self.setBackground(bg)
        plot = self.getPlotItem()
        for name in ("left", "bottom"):
            plot.getAxis(name).setTextPen(pg.mkPen(fg))
            plot.getAxis(name).setPen(pg.mkPen(fg))
        if self.values:
            self.set_values(self.values, self._title)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "_title"):  # (not during __init__)
            self._restyle()

    def set_values(self, values: list[tuple[str, float]], title: str = "") -> None:
        plot = self.getPlotItem()
        if self._bars is not None:
            plot.removeItem(self._bars)
            self._bars = None
        for label in self._labels:
            plot.removeItem(label)
        self._labels = []
        self.values = list(values)
        self._title = title
        bg, fg = palette_colours(self)
        plot.setTitle(title, size="9pt", color=fg.name())
        plot.showGrid(x=bool(values), y=False, alpha=0.3)
        plot.getAxis("left").setStyle(showValues=bool(values))
        plot.getAxis("bottom").setStyle(showValues=bool(values))
        if not values:
            plot.getAxis("left").setTicks([[]])
            return
        ys = list(range(len(values)))
        widths = [v for _, v in values]
        self._bars = pg.BarGraphItem(x0=0, y=ys, height=0.6, width=widths, brush=BAR_COLOUR, pen=None)
        plot.addItem(self._bars)
        for y, (_, v) in zip(ys, values):
            label = pg.TextItem(f"{v:.2f}", color=fg, anchor=(0, 0.5))
            label.setPos(v, y)
            plot.addItem(label)
            self._labels.append(label)
        plot.getAxis("left").setTicks([[(y, _short(name)) for y, (name, _) in zip(ys, values)]])
        top = max(widths) if widths else 1.0
        plot.setXRange(0, top * 1.25 + 0.1, padding=0)
        plot.setYRange(-0.6, max(len(values), 4) - 0.4, padding=0)  # a lone bar stays bar-sized


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"
