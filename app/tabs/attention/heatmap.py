"""One attention matrix as a heatmap with the real tokens on both axes.

Rows are queries (the token that attends), columns are keys (the token attended to). The matrix is
one `ImageItem` (row-major, fixed levels 0..1), so a 1024 x 1024 map draws as fast as a 10 x 10
one. Token labels are small, and the keys' labels stand upright, so each token needs only a line's
height on either axis: every label shows once a token gets LABEL_PX pixels. Below that they thin out
and the line under the map says so; scrolling zooms, `zoom_to_read` goes straight to a scale where
every label shows, and hovering names the query and key under the pointer.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app import theme
from app.theme import palette_colours

COLOUR_MAP = "viridis"
MAX_LABEL_CHARS = 10
NICE_STEPS = (1, 2, 5)
LABEL_POINT_SIZE = 7.5


def axis_label(token: str) -> str:
    """A token as a short axis label: spaces made visible (a leading space matters), long ones cut."""
    s = token.replace(" ", "\u2423")
    return s if len(s) <= MAX_LABEL_CHARS else s[: MAX_LABEL_CHARS - 1] + "\u2026"


def nice_step(minimum: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `minimum`."""
    if minimum <= 1:
        return 1
    power = 10 ** int(math.floor(math.log10(minimum)))
    for mult in NICE_STEPS + (10,):
        if mult * power >= minimum:
            return int(mult * power)
    return int(10 * power)


def label_font() -> QFont:
    font = QFont()
    font.setPointSizeF(LABEL_POINT_SIZE)
    return font


def label_px() -> float:
    """Pixels a token needs along an axis for its label to show (a line of the label font)."""
    return QFontMetrics(label_font()).height() + 1.0


class TokenAxis(pg.AxisItem):
    """An axis whose ticks are token positions labelled with the tokens, thinned to what fits.

    The bottom axis draws its labels rotated (reading upwards), so dense keys fit as well as queries.
    `step` is how many tokens apart the shown labels are at the current zoom (1: all of them).
    """

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.labels: list[str] = []
        self.step = 1
        self.enableAutoSIPrefix(False)  # positions, not quantities (and it costs a pass over the range)
        self._font = label_font()
        self.setStyle(tickFont=self._font)
        self._label_px = label_px()

    def set_labels(self, labels: list[str]) -> None:
        self.labels = [axis_label(s) for s in labels]
        if self.orientation == "bottom":
            metrics = QFontMetrics(self._font)
            longest = sorted(self.labels, key=len)[-20:]  # measuring a thousand labels costs a frame
            widest = max((metrics.horizontalAdvance(s) for s in longest), default=10)
            self.setHeight(int(widest + self._label_px + 12))  # room for upright labels and the axis title
        self.picture = None
        self.update()

    def tickValues(self, minVal: float, maxVal: float, size: float):
        n = len(self.labels)
        if n == 0 or size <= 0:
            return []
        lo, hi = sorted((minVal, maxVal))
        px_per_token = size / max(hi - lo, 1e-9)
        self.step = nice_step(self._label_px / px_per_token)
        first = max(0, math.ceil(lo / self.step) * self.step)
        last = min(n - 1, math.floor(hi))
        return [(float(self.step), list(range(first, last + 1, self.step)))]

    def tickStrings(self, values, scale, spacing):
        n = len(self.labels)
        return [self.labels[int(v)] if 0 <= int(v) < n else "" for v in values]

    def drawPicture(self, p: QPainter, axisSpec, tickSpecs, textSpecs) -> None:
        if self.orientation != "bottom":
            super().drawPicture(p, axisSpec, tickSpecs, textSpecs)
            return
        super().drawPicture(p, axisSpec, tickSpecs, [])  # the axis line and ticks
        p.setFont(self._font)
        p.setPen(self.textPen())
        height = self._label_px
        for rect, _flags, text in textSpecs:
            width = QFontMetrics(self._font).horizontalAdvance(text) + 2
            p.save()
            p.translate(rect.center().x(), rect.top())
            p.rotate(-90)  # upright: the text reads upwards and ends at the axis
            p.drawText(QRectF(-width, -height / 2, width, height),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
            p.restore()


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
        self.view.installEventFilter(self)
        self.plot.getViewBox().sigRangeChanged.connect(self._show_hint)
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
        colour = theme.muted_color() if muted else palette_colours(self)[1]
        self.plot.setTitle(text, color=colour.name(), size="10pt")

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "_title"):  # (not during __init__)
            self._restyle()

    def eventFilter(self, obj, event: QEvent) -> bool:
        if obj is self.view and event.type() == QEvent.Type.Leave:
            self._last_hover = (-1, -1)  # the pointer left: no stale query/key line
            self._show_hint()
            self.hovered.emit(-1, -1)
        return super().eventFilter(obj, event)

    def clear(self, message: str = "") -> None:
        self.matrix = None
        self.tokens = []
        self.image.clear()
        self.left_axis.set_labels([])
        self.bottom_axis.set_labels([])
        self._set_title(message, muted=True)
        self.info.setText(" ")

    def labels_step(self) -> int:
        """How many tokens apart the labels are at the current zoom (1: every token is labelled)."""
        if self.matrix is None:
            return 1
        vb = self.plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        px = min(vb.width() / max(x1 - x0, 1e-9), vb.height() / max(y1 - y0, 1e-9))
        return nice_step(label_px() / px) if px > 0 else 1

    def _show_hint(self, *args) -> None:
        """Under the map, while the pointer is elsewhere: how to read every token when labels are thinned."""
        if self._last_hover[0] >= 0 or self.matrix is None:
            return
        step = self.labels_step()
        self.info.setText("Hover the map for the query, key and weight." if step == 1 else
                          f"Labels show one token in {step} at this zoom: scroll to zoom in, or press “Read tokens”; "
                          "hover the map for any query and key.")

    def zoom_to_read(self, center: int | None = None) -> None:
        """Zoom so every token of the window around `center` (default: the middle of the view) has a label."""
        if self.matrix is None:
            return
        vb = self.plot.getViewBox()
        n = self.matrix.shape[0]
        span = max(4.0, min(vb.width(), vb.height()) / label_px())
        if span >= n:
            self.reset_zoom()
            return
        if center is None:
            (x0, x1), _ = vb.viewRange()
            center = int((x0 + x1) / 2)
        lo = min(max(center - span / 2, -0.5), n - 0.5 - span)
        vb.disableAutoRange()
        vb.setRange(xRange=(lo, lo + span), yRange=(lo, lo + span), padding=0)

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
        self._show_hint()

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
        if q >= 0:
            self.info.setText(self.describe_cell(q, k))
        else:
            self._show_hint()
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
