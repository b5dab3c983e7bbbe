"""All layers x heads at a glance: a grid of small attention maps (like bertviz's model view).

Each cell is a thumbnail (max-pooled to at most THUMB pixels a side, so a diagonal or an
induction stripe stays visible at 1024 tokens) in its own tiny ViewBox; the last column is the
mean over the layer's heads. Clicking a cell emits its layer and head (head -1 for the mean).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QWidget

from app.theme import palette_colours

THUMB = 64
MEAN = -1  # the "head" index of the mean column
SELECTED_PEN = pg.mkPen("#E65100", width=3)
CELL_PEN = pg.mkPen("#bbb", width=1)
LABEL_WIDTH = 30
HEADER_HEIGHT = 18
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


class _Cell(pg.ViewBox):
    def __init__(self, owner: AttentionOverview, layer: int, head: int):
        super().__init__(lockAspect=True, enableMouse=False, enableMenu=False, invertY=True,
                         border=CELL_PEN, defaultPadding=0.0)
        self.owner, self.layer, self.head = owner, layer, head
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.addItem(self.image)
        what = "mean over heads" if head == MEAN else f"head {head}"
        self.setToolTip(f"layer {layer}, {what}: click to open")

    def set_image(self, thumb: np.ndarray) -> None:
        self.image.setImage(thumb, levels=(0.0, 1.0), autoLevels=False)
        self.setRange(xRange=(0, thumb.shape[1]), yRange=(0, thumb.shape[0]), padding=0.0)

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.owner.cell_clicked.emit(self.layer, self.head)
        else:
            ev.ignore()


class AttentionOverview(pg.GraphicsLayoutWidget):
    cell_clicked = Signal(int, int)  # layer, head (MEAN = -1 for the mean column)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setBackground(palette_colours(self)[0])
        self.ci.layout.setSpacing(3)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.cells: dict[tuple[int, int], _Cell] = {}
        self._shape: tuple[int, int] | None = None
        self._selected: tuple[int, int] | None = None

    def _build(self, layers: int, heads: int) -> None:
        self.ci.clear()
        self.cells = {}
        label = {"color": palette_colours(self)[1].name(), "size": "8pt"}
        for h in range(heads):
            self.ci.addLabel(f"H{h}", row=0, col=h + 1, **label)
        self.ci.addLabel("mean", row=0, col=heads + 1, **label)
        for layer in range(layers):
            self.ci.addLabel(f"L{layer}", row=layer + 1, col=0, **label)
            for h in list(range(heads)) + [MEAN]:
                cell = _Cell(self, layer, h)
                self.ci.addItem(cell, row=layer + 1, col=(heads + 1 if h == MEAN else h + 1))
                self.cells[(layer, h)] = cell
        self._shape = (layers, heads)
        self._selected = None
        self._fit_cells()

    def _fit_cells(self) -> None:
        """Square cells as large as the widget allows (aspect-locked cells in stretched rows leave gaps)."""
        if getattr(self, "_shape", None) is None:  # also called from the base class's __init__
            return
        layers, heads = self._shape
        grid = self.ci.layout
        spacing = grid.horizontalSpacing() if grid.horizontalSpacing() >= 0 else 3
        avail_w = self.viewport().width() - LABEL_WIDTH - (heads + 2) * spacing - 8
        avail_h = self.viewport().height() - HEADER_HEIGHT - (layers + 1) * spacing - 8
        size = max(MIN_CELL, min(avail_w / (heads + 1), avail_h / layers))
        grid.setColumnFixedWidth(0, LABEL_WIDTH)
        grid.setRowFixedHeight(0, HEADER_HEIGHT)
        for col in range(1, heads + 2):
            grid.setColumnFixedWidth(col, size)
        for row in range(1, layers + 1):
            grid.setRowFixedHeight(row, size)

    def preferred_height(self) -> int:
        """Height that shows every layer with square cells at the current width."""
        if self._shape is None:
            return 0
        layers, heads = self._shape
        cell = max(MIN_CELL, (self.viewport().width() - LABEL_WIDTH - (heads + 2) * 3 - 8) / (heads + 1))
        return int(HEADER_HEIGHT + layers * (cell + 3) + 12)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "cells"):  # (not during __init__)
            self.setBackground(palette_colours(self)[0])
            if self._shape is not None:
                thumbs = {key: cell.image.image for key, cell in self.cells.items()}
                selected = self._selected
                self._build(*self._shape)  # labels take the new text colour
                for key, image in thumbs.items():
                    if image is not None:
                        self.cells[key].set_image(image)
                if selected is not None:
                    self.set_selected(*selected)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_cells()

    def set_thumbnails(self, thumbs: np.ndarray) -> None:
        """[L, H + 1, t, t] from `thumbnails()`."""
        layers, heads = thumbs.shape[0], thumbs.shape[1] - 1
        if self._shape != (layers, heads):
            self._build(layers, heads)
        for (layer, h), cell in self.cells.items():
            cell.set_image(thumbs[layer, heads if h == MEAN else h])

    def clear_maps(self) -> None:
        for cell in self.cells.values():
            cell.image.clear()

    def set_selected(self, layer: int | None, head: int | None) -> None:
        """Outline the cell shown in the big view (None: nothing, e.g. for rollout)."""
        if self._selected in self.cells:
            self.cells[self._selected].setBorder(CELL_PEN)
        key = (layer, head)
        self._selected = key if key in self.cells else None
        if self._selected is not None:
            self.cells[self._selected].setBorder(SELECTED_PEN)
