"""The next-token distribution of one step of one column, as a pyqtgraph bar chart.

For each of the top candidates two bars stand side by side: the raw probability (the model's
softmax, before any filter) and the final probability (what the token was drawn from). A candidate
that a filter removed has its raw bar painted in that filter's colour, and no final bar.
The widget only draws `DistributionData`; the tab computes it with engine.sampling.filter_stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.widgets.labels import Swatch

# Which filter removed a token -> (legend text, colour). Okabe-Ito hues, readable by colour-blind people.
# "penalty" never removes a token: it outlines the raw bars of the tokens it pushed down.
FILTER_COLOURS = {
    "penalty": ("repetition penalty", "#CC79A7"),
    "top_k": ("top-k", "#E69F00"),
    "top_p": ("top-p", "#D55E00"),
    "min_p": ("min-p", "#009E73"),
    "greedy": ("greedy", "#8E6BBF"),
}
RAW_COLOUR = "#9aa0a6"
FINAL_COLOUR = "#1a73e8"
LABEL_CHARS = 8  # tick labels longer than this are cut


@dataclass
class DistributionData:
    labels: list[str]  # display text of each candidate, most probable (raw) first
    raw: np.ndarray  # [N] probability before any filter
    final: np.ndarray  # [N] probability the token was drawn from (0 where removed)
    removed_by: list[str]  # [N] key of FILTER_COLOURS that removed the token, "" if it survived
    penalised: list[bool]  # [N] the repetition penalty lowered it
    chosen: int | None = None  # index of the token the decoder picked at this step, if among them
    title: str = ""  # plain text
    summary: str = ""  # rich text
    colour: str = ""  # the column's colour, as a dot before the title
    removed_counts: dict[str, int] = field(default_factory=dict)  # over the whole vocabulary


class DistributionView(QWidget):
    """Title line, bar chart, and a legend of the bar colours."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.data: DistributionData | None = None
        self.title = Swatch("#00000000", "Next-token distribution", shape="dot")
        font = self.title.text.font()
        font.setBold(True)
        self.title.text.setFont(font)
        self.summary = QLabel("Generate, then hover or click a token to see the choice the decoder had at that step.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.setLabel("left", "probability")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.getAxis("bottom").setStyle(tickTextOffset=4)
        self.plot.getAxis("bottom").setHeight(30)  # room for the token labels
        self.plot.setMinimumHeight(110)
        self.plot.setToolTip("Top candidates for the selected step. Grey: the model's raw probability. "
                             "Blue: the probability after this column's filters (what is sampled from). "
                             "A coloured raw bar with no blue bar: a filter removed that token.")
        self.raw_bars = pg.BarGraphItem(x=[], height=[], width=0.38)
        self.final_bars = pg.BarGraphItem(x=[], height=[], width=0.38)
        self.plot.addItem(self.raw_bars)
        self.plot.addItem(self.final_bars)
        self.chosen_marker = pg.TextItem("◀ chosen", anchor=(0.0, 0.5))
        self.plot.addItem(self.chosen_marker)
        self.chosen_marker.hide()

        legend = QHBoxLayout()
        legend.setSpacing(14)
        legend.addWidget(Swatch(RAW_COLOUR, "raw"))
        legend.addWidget(Swatch(FINAL_COLOUR, "final (sampled from)"))
        self.removed_labels: dict[str, Swatch] = {}
        for key, (_text, colour) in FILTER_COLOURS.items():
            if key == "top_k":
                legend.addSpacing(10)
                legend.addWidget(QLabel("removed by:"))
            label = Swatch(colour, _legend_text(key, 0), shape="outline" if key == "penalty" else "square")
            self.removed_labels[key] = label
            legend.addWidget(label)
        legend.addStretch(1)

        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.summary)
        layout.addWidget(self.plot, 1)
        layout.addLayout(legend)
        self._apply_palette()

    def _apply_palette(self) -> None:
        palette = QGuiApplication.palette()
        self.plot.setBackground(palette.color(QPalette.ColorRole.Base))
        fg = palette.color(QPalette.ColorRole.Text)
        for name in ("left", "bottom"):
            axis = self.plot.getAxis(name)
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
        self.chosen_marker.setColor(fg)

    def changeEvent(self, event) -> None:
        if event.type() == event.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def clear(self, message: str = "") -> None:
        self.data = None
        self.raw_bars.setOpts(x=[], height=[])
        self.final_bars.setOpts(x=[], height=[])
        self.chosen_marker.hide()
        self.plot.getAxis("bottom").setTicks([[]])
        self.title.setText("Next-token distribution")
        self.title.set_colour("#00000000")
        if message:
            self.summary.setText(message)

    def show_data(self, data: DistributionData) -> None:
        self.data = data
        n = len(data.labels)
        x = np.arange(n, dtype=float)
        raw_brushes = [pg.mkBrush(FILTER_COLOURS.get(r, ("", RAW_COLOUR))[1] if r else RAW_COLOUR)
                       for r in data.removed_by]
        penalty_pen = pg.mkPen(FILTER_COLOURS["penalty"][1], width=2.5)
        raw_pens = [penalty_pen if p else pg.mkPen(None) for p in data.penalised]
        self.raw_bars.setOpts(x=x - 0.2, height=data.raw, width=0.38, brushes=raw_brushes, pens=raw_pens)
        self.final_bars.setOpts(x=x + 0.2, height=data.final, width=0.38, brush=pg.mkBrush(FINAL_COLOUR),
                                pen=None)
        ticks = [(i, _short(label)) for i, label in enumerate(data.labels)]
        self.plot.getAxis("bottom").setTicks([ticks])
        top = float(max(np.max(data.raw, initial=0.0), np.max(data.final, initial=0.0), 1e-6))
        self.plot.setXRange(-0.7, max(n, 1) - 0.3, padding=0)
        self.plot.setYRange(0, top * 1.12, padding=0)
        if data.chosen is not None and 0 <= data.chosen < n:
            # Beside the chosen bars, half way up (above them, a short plot would cut the mark off).
            height = max(data.raw[data.chosen], data.final[data.chosen])
            self.chosen_marker.setPos(data.chosen + 0.45, max(height / 2, top * 0.15))
            self.chosen_marker.show()
        else:
            self.chosen_marker.hide()
        self.title.setText(data.title)
        self.title.set_colour(data.colour or "#00000000")
        self.summary.setText(data.summary)
        for key, label in self.removed_labels.items():
            label.setText(_legend_text(key, data.removed_counts.get(key, 0)))


def _legend_text(key: str, count: int) -> str:
    text = "lowered by the repetition penalty" if key == "penalty" else FILTER_COLOURS[key][0]
    return f"{text} ({count:,})" if count else text


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
