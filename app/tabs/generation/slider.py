"""One labeled sampling slider with an editable value readout (Generation tab).

A QSlider moves in integer positions; `SliderSpec` maps them to the knob's real value, linearly or
on a log scale (top-k spans 0 … vocab size, so a linear slider would make k = 1 … 100 one pixel).
The spin box beside it shows the value and lets a person type an exact one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QWidget,
)

POSITIONS = 1000  # slider resolution for float knobs and log-scaled int knobs


@dataclass(frozen=True)
class SliderSpec:
    key: str  # the SamplingConfig field it sets
    label: str
    minimum: float
    maximum: float
    tooltip: str
    decimals: int = 2  # 0 makes it an integer knob
    log: bool = False  # log scale above the minimum (the minimum itself stays reachable)
    special_text: str = ""  # shown instead of the value at the minimum ("off", "greedy")


class SliderRow(QObject):
    """Label · slider · value box (three widgets the column lays out in its grid, so the sliders of
    every row line up). `valueChanged` fires while dragging; `released` when a drag or an edit is done
    (the moment "live regenerate" reacts to)."""

    valueChanged = Signal(float)
    released = Signal()

    def __init__(self, spec: SliderSpec, parent: QObject | None = None):
        super().__init__(parent)
        self.spec = spec
        self._maximum = spec.maximum
        self.label = QLabel(spec.label)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, POSITIONS)
        self.slider.setMinimumWidth(60)
        if spec.decimals == 0:
            self.box: QAbstractSpinBox = QSpinBox()
        else:
            self.box = QDoubleSpinBox()
            self.box.setDecimals(spec.decimals)
            self.box.setSingleStep(10 ** -spec.decimals * 5 if spec.decimals > 1 else 0.1)
        self.box.setRange(spec.minimum, spec.maximum)
        self.box.setSpecialValueText(spec.special_text)
        self.box.setKeyboardTracking(False)  # typing "0.75" must not fire for "0", "0.", "0.7"
        self.box.setAlignment(Qt.AlignmentFlag.AlignRight)
        # As wide as its longest text ("greedy", the vocabulary size): the grid column takes the widest box.
        self.box.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        # Tall enough for descenders ("greedy"): Fusion's minimum cuts them at some font sizes.
        self.box.setMinimumHeight(self.box.fontMetrics().height() + 8)
        self.label.setBuddy(self.box)
        for w in (self.label, self.slider, self.box):
            w.setToolTip(spec.tooltip)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self._emit_released)
        self.box.valueChanged.connect(self._on_box)
        self.box.editingFinished.connect(self._on_box_done)
        self._last_released = self.value()

    @property
    def widgets(self) -> tuple[QWidget, QWidget, QWidget]:
        return self.label, self.slider, self.box

    def place(self, grid: QGridLayout, row: int, column: int) -> None:
        """Put label, slider and box into grid columns column … column + 2 of `row`."""
        for i, w in enumerate(self.widgets):
            grid.addWidget(w, row, column + i)

    # value <-> slider position ---------------------------------------------------------------

    def _to_position(self, value: float) -> int:
        lo, hi = self.spec.minimum, self._maximum
        if hi <= lo:
            return 0
        if self.spec.log:
            if value <= lo:
                return 0
            # positions 1..POSITIONS cover max(lo, 1) .. hi geometrically
            base = max(lo, 1.0)
            if hi <= base:
                return POSITIONS
            return max(1, round(POSITIONS * math.log(max(value, base) / base) / math.log(hi / base)))
        return round(POSITIONS * (value - lo) / (hi - lo))

    def _from_position(self, position: int) -> float:
        lo, hi = self.spec.minimum, self._maximum
        if self.spec.log:
            if position <= 0:
                return lo
            base = max(lo, 1.0)
            value = base * (hi / base) ** (position / POSITIONS) if hi > base else hi
        else:
            value = lo + (hi - lo) * position / POSITIONS
        return round(value, self.spec.decimals) if self.spec.decimals else float(round(value))

    # public ----------------------------------------------------------------------------------

    def value(self) -> float:
        return float(self.box.value())

    def setValue(self, value: float) -> None:
        """Set without emitting (presets, loading, model changes)."""
        value = min(max(value, self.spec.minimum), self._maximum)
        self._set_silently(value)
        self._last_released = self.value()

    def setMaximum(self, maximum: float) -> None:
        """Change the top of the range (top-k follows the vocabulary); the value is clamped."""
        value = min(self.value(), maximum)
        self._maximum = maximum
        self.box.setRange(self.spec.minimum, maximum)
        self._set_silently(value)

    def maximum(self) -> float:
        return self._maximum

    def _set_silently(self, value: float) -> None:
        for w in (self.slider, self.box):
            w.blockSignals(True)
        self.box.setValue(int(value) if self.spec.decimals == 0 else value)
        self.slider.setValue(self._to_position(value))
        for w in (self.slider, self.box):
            w.blockSignals(False)

    @Slot(int)
    def _on_slider(self, position: int) -> None:
        value = self._from_position(position)
        self.box.blockSignals(True)
        self.box.setValue(int(value) if self.spec.decimals == 0 else value)
        self.box.blockSignals(False)
        self.valueChanged.emit(self.value())
        if not self.slider.isSliderDown():  # a click on the groove or a key press: done at once
            self._emit_released()

    def _on_box(self, _value: float) -> None:  # int or float, as the spin box's type gives it
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_position(self.value()))
        self.slider.blockSignals(False)
        self.valueChanged.emit(self.value())

    @Slot()
    def _on_box_done(self) -> None:
        self._emit_released()

    @Slot()
    def _emit_released(self) -> None:
        if self.value() != self._last_released:
            self._last_released = self.value()
            self.released.emit()
