"""The embedding map: every token of the vocabulary as a point on the first two principal axes of the token
embedding table, with hover (the token under the pointer) and search (matching tokens ringed and labelled).

With a text run, its residual stream is drawn on the same axes as a path through its positions, one layer at
a time (the slider: 0 is the token embeddings, l the output of block l - 1). With "Over training", the table's
points come from the evaluations of the last run (small vocabularies only) and the slider walks through them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QVBoxLayout, QWidget

from app.tabs.inside.session import InsideSession, TextTokens
from app.theme import RUN_COLORS, plot_foreground, style_plot_widget
from app.widgets.probe_slider import ProbeSlider, step_text
from engine import EmbeddingMap, ProgressEvent, embedding_map

ALL_LABELS_UP_TO = 300  # label every point of vocabularies this small (characters, tiny BPEs)
MAX_SEARCH_LABELS = 40
MAX_STREAM_LABELS = 40
STREAM_COLOR = RUN_COLORS[5]
MATCH_COLOR = RUN_COLORS[2]


def map_job(model: Any, ids: list[int] | None):
    """A job: the embedding map (one eigen-decomposition and, with ids, one forward)."""
    yield ProgressEvent(job="embedding_map", done=0, total=1, message="principal axes of the embedding table")
    yield embedding_map(model, ids)


class EmbeddingMapPanel(QWidget):
    def __init__(self, session: InsideSession, render: Callable[[int], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.render = render
        self.result: EmbeddingMap | None = None
        self.tokens: TextTokens | None = None
        self.points: np.ndarray | None = None  # what is on screen (the map's, or a probe's)
        self.probes: list[Any] = []
        self._labels: list[pg.TextItem] = []

        self.compute_button = QPushButton("Compute map")
        self.compute_button.setToolTip("PCA of the token embedding table, and the text's residual stream on the "
                                       "same axes (off the GUI thread)")
        self.compute_button.clicked.connect(self.run)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search tokens…")
        self.search.setToolTip("Ring and label the tokens whose text contains this")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._redraw_overlays)
        self.layer = QSlider(Qt.Orientation.Horizontal)
        self.layer.setRange(0, 0)
        self.layer.setPageStep(1)
        self.layer.setToolTip("Which layer of the residual stream to draw: 0 = the token embeddings, "
                              "l = the output of block l - 1")
        self.layer.valueChanged.connect(self._redraw_overlays)
        self.layer_label = QLabel("")
        self.layer_label.setMinimumWidth(150)
        self.over_training = ProbeSlider("The table's map at each evaluation of the last run (recorded for "
                                         "vocabularies up to 8,192 tokens)", "Training step of the map shown")
        self.over_training.check.toggled.connect(self._refresh_points)
        self.over_training.slider.valueChanged.connect(self._refresh_points)
        top = QHBoxLayout()
        top.addWidget(self.compute_button)
        top.addWidget(self.search, 1)
        top.addWidget(QLabel("Layer:"))
        top.addWidget(self.layer, 1)
        top.addWidget(self.layer_label)

        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.table_points = pg.ScatterPlotItem(size=6, pen=None, hoverable=True, tip=None)
        self.table_points.sigHovered.connect(self._on_hover)
        self.matches = pg.ScatterPlotItem(size=12, brush=None, pen=pg.mkPen(MATCH_COLOR, width=2))
        faint = QColor(STREAM_COLOR)
        faint.setAlphaF(0.3)  # the path's order matters less than where its points are
        self.stream_path = pg.PlotDataItem(pen=pg.mkPen(faint, width=1), symbol="o", symbolSize=7,
                                           symbolBrush=STREAM_COLOR, symbolPen=None)
        for item in (self.table_points, self.matches, self.stream_path):
            self.plot.addItem(item)
        self.info = QLabel("Press Compute map: every token of the vocabulary on the two directions along which "
                           "the embedding table varies most.")
        self.info.setWordWrap(True)
        self.hover_label = QLabel(" ")
        self.hover_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.over_training)
        layout.addWidget(self.info)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hover_label)
        self._restyle()
        self.set_probes([])

    # ------------------------------------------------------------ data in

    @Slot()
    def run(self) -> None:
        model = self.session.state.model
        if model is None:
            self.session.message.emit("No model yet: train one in the Training tab or open a checkpoint.")
            return
        tokens = self.session.tokens()  # None (no text): the table alone
        ids = list(tokens.ids) if tokens is not None else None
        self.session.start("Embedding map…", map_job(model, ids),
                           lambda result, tokens=tokens: self.show_map(tokens, result),
                           "Map done: hover a point, search for tokens, move the layer slider.")

    def show_map(self, tokens: TextTokens | None, result: Any) -> None:
        if not isinstance(result, EmbeddingMap):
            return
        self.result, self.tokens = result, tokens if result.stream is not None else None
        n = 0 if result.stream is None else result.stream.shape[0] - 1
        self.layer.blockSignals(True)
        self.layer.setRange(0, n)
        self.layer.setValue(n if self.layer.value() > n or self.layer.value() == 0 else self.layer.value())
        self.layer.blockSignals(False)
        self.layer.setEnabled(n > 0)
        ex = result.explained * 100
        self.info.setText(f"{len(result.points):,} tokens on the embedding table's first two principal axes "
                          f"({ex[0]:.1f}% and {ex[1]:.1f}% of its variance). Hover a point; search to find tokens."
                          + (" The path is the text's residual stream at the chosen layer." if n else ""))
        if self.over_training.showing:
            self.over_training.check.setChecked(False)
        self._refresh_points()

    def clear(self) -> None:
        self.result, self.tokens, self.points = None, None, None
        self.table_points.clear()
        self.stream_path.setData([], [])
        self.matches.clear()
        self._clear_labels()
        self.layer.setRange(0, 0)
        self.layer_label.setText("")

    def set_probes(self, probes: list[Any]) -> None:
        self.probes = [p for p in probes if getattr(p, "embedding_points", None) is not None]
        self.over_training.set_count(len(self.probes))  # none: unticks, which redraws
        self.over_training.label.setText(f"{len(self.probes)} maps recorded" if self.probes else "no maps recorded")
        if self.over_training.showing:
            self._refresh_points()

    # ------------------------------------------------------------ drawing

    @Slot()
    def _refresh_points(self) -> None:
        if self.over_training.showing and self.probes:
            index = min(self.over_training.index, len(self.probes) - 1)
            probe = self.probes[index]
            self.points = np.asarray(probe.embedding_points, np.float32)
            self.over_training.label.setText(step_text(probe.step, index, len(self.probes)))
        else:
            self.points = None if self.result is None else self.result.points
        if self.points is None:
            self.table_points.clear()
        else:
            self.table_points.setData(pos=self.points, data=np.arange(len(self.points)))
        self._redraw_overlays()

    @Slot()
    def _redraw_overlays(self) -> None:
        self._clear_labels()
        fg = plot_foreground()
        points = self.points
        if points is None:
            self.matches.clear()
            self.stream_path.setData([], [])
            return
        if len(points) <= ALL_LABELS_UP_TO:
            for i, (x, y) in enumerate(points):
                self._label(self.render(i), x, y, fg, alpha=0.75)
        query = self.search.text()
        found = [i for i in range(len(points)) if query and query in self.render(i)] if query else []
        self.matches.setData(pos=points[found] if found else np.zeros((0, 2)))
        if len(points) > ALL_LABELS_UP_TO:
            for i in found[:MAX_SEARCH_LABELS]:
                self._label(self.render(i), *points[i], QColor(MATCH_COLOR))
        if query:
            self.hover_label.setText(f"{len(found):,} tokens contain {query!r}")
        showing_probe = self.over_training.showing
        result = self.result
        if result is None or result.stream is None or showing_probe:
            self.stream_path.setData([], [])
            self.layer_label.setText("" if not showing_probe else "(the text's stream: untick Over training)")
            return
        layer = min(self.layer.value(), result.stream.shape[0] - 1)
        self.layer_label.setText("token embeddings" if layer == 0 else f"after block {layer - 1}")
        xy = result.stream[layer]
        self.stream_path.setData(xy[:, 0], xy[:, 1])
        if self.tokens is not None:
            for k in range(min(len(xy), MAX_STREAM_LABELS)):
                self._label(f"{k}:{self.tokens.labels[k]}", *xy[k], QColor(STREAM_COLOR))

    def _label(self, text: str, x: float, y: float, color: QColor, alpha: float = 1.0) -> None:
        c = QColor(color)
        c.setAlphaF(alpha)
        item = pg.TextItem(text, color=c, anchor=(0, 1))
        item.setPos(float(x), float(y))
        self.plot.addItem(item)
        self._labels.append(item)

    def _clear_labels(self) -> None:
        for item in self._labels:
            self.plot.removeItem(item)
        self._labels = []

    def _on_hover(self, item: Any, points: Any, ev: Any = None) -> None:
        if points is None or len(points) == 0:
            return
        i = int(points[0].data())
        x, y = points[0].pos().x(), points[0].pos().y()
        self.hover_label.setText(f"token {i:,} {self.render(i)!r} at ({x:.3f}, {y:.3f})")

    def _restyle(self) -> None:
        style_plot_widget(self.plot)
        muted = QColor(plot_foreground())
        muted.setAlphaF(0.45)
        self.table_points.setBrush(pg.mkBrush(muted))

    def changeEvent(self, event: Any) -> None:
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange:
            self._restyle()
            self._redraw_overlays()
