"""All layers x heads at a glance: a grid of small attention maps (like bertviz's model view).

Each cell is a thumbnail (max-pooled to at most THUMB pixels a side, so a diagonal or an induction
stripe stays visible at 1024 tokens); the last column is the mean over the layer's heads. The grid is
one image (`mosaic`, assembled in the attention job), not a widget per cell: a 24-layer model has 360
cells, and building that many plot items took the GUI thread seconds. Clicking a cell emits its layer
and head (head -1 for the mean); hovering one says which it is, and with grouped-query attention which
key/value group its head reads.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import QGraphicsRectItem, QWidget

from app.tabs.attention.groups import kv_group
from app.theme import palette_colours

THUMB = 64
GAP = 4  # pixels of background between cells (in thumbnail pixels)
MEAN = -1  # the "head" index of the mean column
SELECTED_PEN = pg.mkPen("#E65100", width=3)
MIN_CELL = 10


def pool_max(matrix: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Shrink a [T, T] map to at most size x size by taking the max of each block."""
    t_rows, t_cols = matrix.shape[-2:]
    f = max(1, -(-max(t_rows, t_cols) // size))
    if f == 1:
        return np.ascontiguousarray(matrix, dtype=np.float32)
    rows, cols = -(-t_rows // f), -(-t_cols // f)
    padded = np.zeros(matrix.shape[:-2] + (rows * f, cols * f), dtype=np.float32)
    padded[..., :t_rows, :t_cols] = matrix
    shaped = padded.reshape(matrix.shape[:-2] + (rows, f, cols, f))
    return shaped.max(axis=(-3, -1))


def thumbnails(maps: np.ndarray, size: int = THUMB) -> np.ndarray:
    """[L, H, T, T] maps -> [L, H + 1, t, t] thumbnails, the last column the mean over heads."""
    L, H = maps.shape[:2]
    out = None
    for layer in range(L):
        cells = [pool_max(maps[layer, h], size) for h in range(H)]
        cells.append(pool_max(maps[layer].mean(axis=0), size))
        if out is None:
            out = np.empty((L, H + 1) + cells[0].shape, dtype=np.float32)
        out[layer] = np.stack(cells)
    return out


def mosaic(thumbs: np.ndarray, gap: int = GAP) -> np.ndarray:
    """[L, C, t, t] thumbnails -> one [L * (t + gap), C * (t + gap)] image, NaN (transparent) between cells."""
    L, C, t, _ = thumbs.shape
    step = t + gap
    out = np.full((L * step, C * step), np.nan, dtype=np.float32)
    for layer in range(L):
        for col in range(C):
            out[layer * step: layer * step + t, col * step: col * step + t] = thumbs[layer, col]
    return out


class AttentionOverview(pg.GraphicsLayoutWidget):
    cell_clicked = Signal(int, int)  # layer, head (MEAN = -1 for the mean column)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot: pg.PlotItem = self.addPlot()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.showAxis("top")
        self.plot.hideAxis("bottom")
        for name in ("left", "top"):
            axis = self.plot.getAxis(name)
            axis.setStyle(tickLength=0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.plot.addItem(self.image)
        self.outline = QGraphicsRectItem()
        self.outline.setPen(SELECTED_PEN)
        self.outline.setZValue(10)
        self.outline.hide()
        self.plot.addItem(self.outline)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self._shape: tuple[int, int] | None = None
        self._cell = THUMB  # thumbnail size in image pixels
        self._selected: tuple[int, int] | None = None
        self._groups: tuple[int, int] | None = None  # (n_heads, n_kv_heads) when heads share key/value groups
        self.scene().sigMouseClicked.connect(self._on_click)
        self.scene().sigMouseMoved.connect(self._on_move)
        self._restyle()

    def _restyle(self) -> None:
        bg, fg = palette_colours(self)
        self.setBackground(bg)
        for name in ("left", "top"):
            axis = self.plot.getAxis(name)
            axis.setPen(pg.mkPen(bg))  # no axis line: the labels are enough
            axis.setTextPen(pg.mkPen(fg))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "outline"):  # (not during __init__)
            self._restyle()

    # ------------------------------------------------------------ content

    def set_groups(self, n_heads: int | None, n_kv_heads: int | None) -> None:
        """Heads that share key/value groups (grouped-query attention): their labels say the group."""
        self._groups = (n_heads, n_kv_heads) if n_heads and n_kv_heads and n_kv_heads < n_heads else None
        if self._shape is not None:
            self._label_axes()

    def set_thumbnails(self, thumbs: np.ndarray, image: np.ndarray | None = None) -> None:
        """[L, H + 1, t, t] from `thumbnails()`; `image` is their `mosaic()` when already made (in a job)."""
        layers, heads = thumbs.shape[0], thumbs.shape[1] - 1
        self._cell = thumbs.shape[-1]
        image = mosaic(thumbs) if image is None else image
        self.image.setImage(image, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(0, 0, image.shape[1], image.shape[0])
        if self._shape != (layers, heads):
            self._shape = (layers, heads)
            self._selected = None
            self.outline.hide()
            self._label_axes()
        self.plot.getViewBox().setRange(QRectF(0, 0, image.shape[1], image.shape[0]), padding=0.01)

    def _label_axes(self) -> None:
        layers, heads = self._shape
        step = self._cell + GAP
        left = [(row * step + self._cell / 2, f"L{row}") for row in range(layers)]
        top = [(col * step + self._cell / 2, self._head_label(col)) for col in range(heads)]
        top.append((heads * step + self._cell / 2, "mean"))
        self.plot.getAxis("left").setTicks([left])
        self.plot.getAxis("top").setTicks([top])

    def _head_label(self, head: int) -> str:
        group = kv_group(head, *self._groups) if self._groups else None
        return f"H{head}" if group is None else f"H{head}·g{group}"

    def clear_maps(self) -> None:
        self.image.clear()
        self.outline.hide()

    def preferred_height(self) -> int:
        """Height that shows every layer with square cells at the current width."""
        if self._shape is None:
            return 0
        layers, heads = self._shape
        width = max(1, self.viewport().width() - 40)  # the layer labels
        cell = max(MIN_CELL, width / (heads + 1))
        return int(30 + layers * cell)

    # ------------------------------------------------------------ cells

    def cell_rect(self, layer: int, head: int) -> QRectF:
        """A cell's rectangle in scene coordinates (head MEAN: the mean column)."""
        layers, heads = self._shape
        col = heads if head == MEAN else head
        step = self._cell + GAP
        rect = QRectF(col * step, layer * step, self._cell, self._cell)
        return self.plot.getViewBox().mapViewToScene(rect).boundingRect()

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """(layer, head) under a scene point, head MEAN for the mean column; None between or outside cells."""
        if self._shape is None or self.image.image is None:
            return None
        p = self.plot.getViewBox().mapSceneToView(scene_pos)
        step = self._cell + GAP
        row, col = int(p.y() // step), int(p.x() // step)
        if p.x() < 0 or p.y() < 0 or p.x() - col * step > self._cell or p.y() - row * step > self._cell:
            return None
        layers, heads = self._shape
        if not (0 <= row < layers and 0 <= col <= heads):
            return None
        return row, (MEAN if col == heads else col)

    def describe(self, layer: int, head: int) -> str:
        if head == MEAN:
            return f"layer {layer}, mean over heads: click to open"
        text = f"layer {layer}, head {head}"
        if self._groups:
            n_heads, n_kv = self._groups
            group = kv_group(head, n_heads, n_kv)
            size = n_heads // n_kv
            text += (f" (key/value group {group}: heads {group * size}–{group * size + size - 1} share its keys "
                     "and values)")
        return text + ": click to open"

    def _on_click(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            event.accept()
            self.cell_clicked.emit(*cell)

    def _on_move(self, scene_pos: QPointF) -> None:
        cell = self.cell_at(scene_pos)
        self.setToolTip(self.describe(*cell) if cell is not None else
                        "Every layer (rows) and head (columns); the last column is the mean over heads. "
                        "Click one to open it.")

    def set_selected(self, layer: int | None, head: int | None) -> None:
        """Outline the cell shown in the big view (None: nothing, e.g. for rollout)."""
        if self._shape is None or layer is None or head is None or not 0 <= layer < self._shape[0]:
            self._selected = None
            self.outline.hide()
            return
        self._selected = (layer, head)
        col = self._shape[1] if head == MEAN else head
        step = self._cell + GAP
        self.outline.setRect(QRectF(col * step - 1, layer * step - 1, self._cell + 2, self._cell + 2))
        self.outline.show()
