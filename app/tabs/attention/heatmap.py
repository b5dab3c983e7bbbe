"""One attention matrix as a heatmap with the real tokens on both axes.

Rows are queries (the token that attends), columns are keys (the token attended to). The matrix is
one `ImageItem` (row-major, fixed levels 0..1), so a 1024 x 1024 map draws as fast as a 10 x 10
one. Token labels thin themselves out to whatever fits at the current zoom: zoom in to read them all.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.theme import palette_colours

COLOUR_MAP = "viridis"
MAX_LABEL_CHARS = 10
NICE_STEPS = (1, 2, 5)


def axis_label(token: str) -> str:
    """A token as a short axis label: spaces made visible (a leading space matters), long ones cut."""
    s = token.replace(" ", "\u2423")
    return s if len(s) <= MAX_LABEL_CHARS else s[: MAX_LABEL_CHARS - 1] + "\u2026"


def _mix(a: QColor, b: QColor, t: float) -> QColor:
    """t of colour a over (1 - t) of b (an opaque "faded" text colour; titles take no alpha)."""
    return QColor(*(int(t * x + (1 - t) * y) for x, y in zip(a.getRgb()[:3], b.getRgb()[:3])))


def nice_step(minimum: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `minimum`."""
    if minimum <= 1:
        return 1
    power = 10 ** int(math.floor(math.log10(minimum)))
    for mult in NICE_STEPS + (10,):
        if mult * power >= minimum:
            return int(mult * power)
    return int(10 * power)


class TokenAxis(pg.AxisItem):
    """An axis whose ticks are token positions labelled with the tokens, thinned to fit."""

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.labels: list[str] = []
        self._label_px = 14.0

    def set_labels(self, labels: list[str]) -> None:
        self.labels = [axis_label(s) for s in labels]
        metrics = QFontMetrics(self.style.get("tickFont") or QFont())
        if self.orientation in ("bottom", "top"):
            widest = max((metrics.horizontalAdvance(s) for s in self.labels), default=10)
            self._label_px = widest + 8.0
        else:
            self._label_px = metrics.height() + 2.0
        self.picture = None
        self.update()

    def tickValues(self, minVal: float, maxVal: float, size: float):
        n = len(self.labels)
        if n == 0 or size <= 0:
            return []
        lo, hi = sorted((minVal, maxVal))
        px_per_token = size / max(hi - lo, 1e-9)
        step = nice_step(self._label_px / px_per_token)
        first = max(0, math.ceil(lo / step) * step)
        last = min(n - 1, math.floor(hi))
        return [(float(step), list(range(first, last + 1, step)))]

    def tickStrings(self, values, scale, spacing):
        n = len(self.labels)
        return [self.labels[int(v)] if 0 <= int(v) < n else "" for v in values]


class AttentionHeatmap(QWidget):
    """Heatmap + colour bar + a line that tells what is under the pointer."""

    query_clicked = Signal(int)
    hovered = Signal(int, int)  # query, key (-1, -1 when off the map)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget()
        self.left_axis = TokenAxis("left")
        self.bottom_axis = TokenAxis("bottom")
        self.plot: pg.PlotItem = self.view.addPlot(axisItems={"left": self.left_axis, "bottom": self.bottom_axis})
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)  # the first query on top, as a matrix is read
        self.plot.setLabel("left", "query (attends from)")
        self.plot.setLabel("bottom", "key (attended to)")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.colour_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get(COLOUR_MAP),
                                          interactive=False, width=14, label="weight", colorMapMenu=False)
        self.colour_bar.setImageItem(self.image, insert_in=self.plot)
        self.info = QLabel(" ")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.info)
        self.matrix: np.ndarray | None = None
        self.tokens: list[str] = []
        self.view.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.view.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self._last_hover = (-1, -1)
        self._title = ("", True)
        self._restyle()
        self.clear()

    def _restyle(self) -> None:
        bg, fg = palette_colours(self)
        self.view.setBackground(bg)
        axes = [self.left_axis, self.bottom_axis, self.colour_bar.getAxis("right")]
        for name in ("left", "bottom"):
            axes.append(self.plot.getAxis(name))
        for axis in axes:
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
        self._set_title(*self._title)

    def _set_title(self, text: str, muted: bool = False) -> None:
        self._title = (text, muted)
        bg, fg = palette_colours(self)
        colour = _mix(fg, bg, 0.6) if muted else fg
        self.plot.setTitle(text, color=colour.name(), size="10pt")

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "_title"):  # (not during __init__)
            self._restyle()

    def clear(self, message: str = "") -> None:
        self.matrix = None
        self.tokens = []
        self.image.clear()
        self.left_axis.set_labels([])
        self.bottom_axis.set_labels([])
        self._set_title(message, muted=True)
        self.info.setText(" ")

    def set_matrix(self, matrix: np.ndarray, tokens: list[str], title: str = "") -> None:
        """Show a [T, T] matrix (rows: queries, columns: keys) labelled with T token strings."""
        matrix = np.asarray(matrix, dtype=np.float32)
        same_size = self.matrix is not None and self.matrix.shape == matrix.shape
        self.matrix = matrix
        self.tokens = list(tokens)
        n = matrix.shape[0]
        # levels fixed to 0..1: every head on the same scale, so heads can be compared by eye.
        self.image.setImage(matrix, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(-0.5, -0.5, matrix.shape[1], n)  # cell (q, k) centred on (k, q)
        self.left_axis.set_labels(self.tokens)
        self.bottom_axis.set_labels(self.tokens)
        self._set_title(title)
        vb = self.plot.getViewBox()
        # Generous limits: tight ones fight the locked aspect ratio in a wide window and crop the map.
        vb.setLimits(xMin=-n, xMax=2 * n, yMin=-n, yMax=2 * n, minXRange=min(4, n), minYRange=min(4, n))
        if not same_size:  # keep the user's zoom while flipping through heads of the same text
            self.reset_zoom()

    def reset_zoom(self) -> None:
        """Fit the whole matrix, and keep fitting it on resize until the user zooms or pans."""
        vb = self.plot.getViewBox()
        vb.enableAutoRange()
        vb.autoRange(padding=0.02)

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int]:
        if self.matrix is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return -1, -1
        p = self.plot.getViewBox().mapSceneToView(scene_pos)
        q, k = int(round(p.y())), int(round(p.x()))
        rows, cols = self.matrix.shape
        if 0 <= q < rows and 0 <= k < cols:
            return q, k
        return -1, -1

    def describe_cell(self, q: int, k: int) -> str:
        tq, tk = repr(self.tokens[q]), repr(self.tokens[k])
        w = float(self.matrix[q, k])
        masked = "  (masked: a query never sees later tokens)" if k > q else ""
        return f"query {q} {tq}  →  key {k} {tk}:  weight {w:.4f}{masked}"

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        q, k = self.cell_at(scene_pos)
        if (q, k) == self._last_hover:
            return
        self._last_hover = (q, k)
        self.info.setText(self.describe_cell(q, k) if q >= 0 else " ")
        self.hovered.emit(q, k)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        q, _ = self.cell_at(event.scenePos())
        if q >= 0:
            self.query_clicked.emit(q)

    def export_png(self, path: str) -> None:
        """The plot with its axes and colour bar, at least 1200 px wide."""
        from pyqtgraph.exporters import ImageExporter

        try:
            exporter = ImageExporter(self.view.scene())
            exporter.parameters()["width"] = max(1200, int(self.view.width()))
            exporter.export(path)
        except Exception:  # an exporter problem should not lose the user's picture: fall back to a grab
            if not self.view.grab().save(path):
                raise OSError(f"could not write {path}") from None
