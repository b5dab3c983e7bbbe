"""The "Over training" bar: a check box, a slider over the evaluations of the last training run, a label, and
optionally Play, which steps the slider through them. The Attention tab (maps forming) and the Inside tab
(surprise and the embedding map over training) each show one.

The bar knows how many probes there are, not what they hold: the tab reads `index` when `check` or `slider`
changes and shows that probe.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

PLAY_MS = 400


def step_text(step: int, index: int, count: int) -> str:
    """The label of the probe on screen: its training step and where it stands among the recorded ones."""
    return f"step {step:,}  ({index + 1} of {count})"


class ProbeSlider(QWidget):
    """Public: check, slider, label, play_button (None without Play), showing, index, set_count."""

    def __init__(self, check_tip: str, slider_tip: str, play_tip: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.check = QCheckBox("Over training")
        self.check.setToolTip(check_tip)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setPageStep(1)
        self.slider.setToolTip(slider_tip)
        self.label = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.check)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.play_button: QPushButton | None = None
        if play_tip is not None:
            self.play_button = QPushButton("▶ Play")
            self.play_button.setCheckable(True)
            self.play_button.setToolTip(play_tip)
            self._timer = QTimer(self, interval=PLAY_MS)
            self._timer.timeout.connect(self._play_step)
            self.play_button.toggled.connect(self._on_play_toggled)
            self.check.toggled.connect(self._on_check)
            layout.addWidget(self.play_button)

    @property
    def showing(self) -> bool:
        return self.check.isChecked()

    @property
    def index(self) -> int:
        return self.slider.value()

    def set_count(self, count: int) -> None:
        """The number of recorded probes changed. At the last one, the slider follows new probes as they arrive;
        with none, the bar is disabled and unticked."""
        at_end = self.slider.value() >= self.slider.maximum()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, count - 1))
        if at_end:
            self.slider.setValue(self.slider.maximum())
        self.slider.blockSignals(False)
        for w in (self.check, self.slider, self.play_button):
            if w is not None:
                w.setEnabled(count > 0)
        if count == 0:
            self.check.setChecked(False)

    @Slot(bool)
    def _on_check(self, on: bool) -> None:
        if not on:
            self.play_button.setChecked(False)

    @Slot(bool)
    def _on_play_toggled(self, playing: bool) -> None:
        self.play_button.setText("❚❚ Pause" if playing else "▶ Play")
        if playing:
            self.check.setChecked(True)
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self._timer.start()
        else:
            self._timer.stop()

    @Slot()
    def _play_step(self) -> None:
        if self.slider.value() >= self.slider.maximum():
            self.play_button.setChecked(False)
        else:
            self.slider.setValue(self.slider.value() + 1)
