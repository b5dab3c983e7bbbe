"""Attention over training: the probe text's maps recorded at each evaluation of the last run, on a
slider that walks through the steps (with Play), so heads can be watched forming."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from app.state import AppState

PROBE_PLAY_MS = 400
SHOW_TIP = ("Show the probe text's attention recorded at each evaluation of the last training run instead of a "
            "run on the text above")


class ProbeBar(QWidget):
    """"Over training" and its step slider. Public: check, slider, label, play_button, showing."""

    showing_changed = Signal(bool)  # "Over training" was ticked (True) or unticked (False)
    probe_chosen = Signal(object)  # an engine AttentionProbeEvent to show (only while ticked)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.check = QCheckBox("Over training")
        self.check.setToolTip(SHOW_TIP)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Training step at which the maps were recorded")
        self.slider.setPageStep(1)
        self.label = QLabel()
        self.label.setMinimumWidth(150)
        self.play_button = QPushButton("▶ Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Step through the recorded training steps")
        self._timer = QTimer(self, interval=PROBE_PLAY_MS)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.check)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        layout.addWidget(self.play_button)
        self._timer.timeout.connect(self._play_step)
        self.check.toggled.connect(self._on_check)
        self.slider.valueChanged.connect(self._on_step)
        self.play_button.toggled.connect(self._on_play_toggled)

    @property
    def showing(self) -> bool:
        return self.check.isChecked()

    def show_probes(self, on: bool) -> None:
        self.check.setChecked(on)

    def refresh(self, show_if_idle: bool) -> None:
        """The recorded probes changed. `show_if_idle`: nothing else is on screen, so tick "Over training"."""
        probes = self.state.attention_probes
        at_end = self.slider.value() >= self.slider.maximum()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(probes) - 1))
        if at_end or self.slider.value() > len(probes) - 1:
            self.slider.setValue(max(0, len(probes) - 1))  # follow new probes as they arrive
        self.slider.blockSignals(False)
        has = bool(probes)
        for w in (self.check, self.slider, self.play_button):
            w.setEnabled(has)
        if not has:
            self.label.setText("no probes recorded yet")
            self.check.setToolTip("Train with a probe text: its attention is recorded at each evaluation")
            self.show_probes(False)
            return
        self.check.setToolTip(SHOW_TIP)
        if show_if_idle and not self.showing:
            self.show_probes(True)  # nothing else to show: watch the heads form during training
        else:
            self._on_step(self.slider.value())

    @Slot(bool)
    def _on_check(self, on: bool) -> None:
        if on:
            self._on_step(self.slider.value())
        else:
            self.play_button.setChecked(False)
        self.showing_changed.emit(on)

    @Slot(int)
    def _on_step(self, index: int) -> None:
        probes = self.state.attention_probes
        if not probes:
            return
        index = max(0, min(index, len(probes) - 1))
        probe = probes[index]
        self.label.setText(f"step {probe.step:,}  ({index + 1} of {len(probes)})")
        if self.showing:
            self.probe_chosen.emit(probe)

    @Slot(bool)
    def _on_play_toggled(self, playing: bool) -> None:
        self.play_button.setText("❚❚ Pause" if playing else "▶ Play")
        if playing:
            self.show_probes(True)
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
