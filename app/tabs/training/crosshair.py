"""The training plots' crosshair: a dotted vertical line across every plot at the mouse, and a readout of the
values there.

Mouse moves are handled at most ~30 times a second (a pending one waits on a timer). The line and the
readout go as soon as the mouse leaves the plots or the run they describe goes (clear()), and an export is
drawn without them (hidden()).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, QTimer, Slot
from PySide6.QtWidgets import QLabel

MOVE_INTERVAL_MS = 33


class Crosshair(QObject):
    """`values_at(x)` gives the readout's rich text for an x value of the plots (" " for nothing)."""

    def __init__(self, graphics: pg.GraphicsLayoutWidget, plots: list[pg.PlotItem], label: QLabel,
                 values_at: Callable[[float], str]) -> None:
        super().__init__(graphics)
        self.graphics = graphics
        self.plots = plots
        self.label = label
        self.values_at = values_at
        self.lines: list[pg.InfiniteLine] = []
        for plot in plots:
            line = pg.InfiniteLine(angle=90, movable=False,
                                   pen=pg.mkPen((128, 128, 128), width=1, style=Qt.PenStyle.DotLine))
            line.setVisible(False)
            plot.addItem(line, ignoreBounds=True)
            self.lines.append(line)
        self._pending: QPointF | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(MOVE_INTERVAL_MS)
        self._timer.timeout.connect(self._apply_pending)
        graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        graphics.installEventFilter(self)
        graphics.viewport().installEventFilter(self)

    @property
    def shown(self) -> bool:
        return any(line.isVisible() for line in self.lines)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Leave and watched in (self.graphics, self.graphics.viewport()):
            self.clear()
        return False

    @Slot(object)
    def _on_mouse_moved(self, pos: QPointF) -> None:
        self._pending = QPointF(pos)
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def _apply_pending(self) -> None:
        if self._pending is not None:
            pos, self._pending = self._pending, None
            self.move_to(pos)

    def x_at(self, scene_pos: QPointF) -> float | None:
        """The x value at a point of the scene (None outside every plot)."""
        for plot in self.plots:
            if plot.sceneBoundingRect().contains(scene_pos):
                return plot.vb.mapSceneToView(scene_pos).x()
        return None

    def move_to(self, scene_pos: QPointF) -> None:
        """Show the line and the values at a point of the scene (nothing there when it is outside every plot)."""
        x = self.x_at(scene_pos)
        if x is None:
            self.clear()
            return
        for line in self.lines:
            line.setPos(x)
            line.setVisible(True)
        self.label.setText(self.values_at(x))

    @Slot()
    def clear(self) -> None:
        """No line, no readout, and no pending move that would bring them back."""
        self._pending = None
        self._timer.stop()
        for line in self.lines:
            line.setVisible(False)
        self.label.setText(" ")

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """The lines hidden for a while (an export), then as they were."""
        visible = [line.isVisible() for line in self.lines]
        for line in self.lines:
            line.setVisible(False)
        try:
            yield
        finally:
            for line, was in zip(self.lines, visible):
                line.setVisible(was)
