"""Attention over training: the probe text's maps recorded at each evaluation of the last run, on a
slider that walks through the steps (with Play), so heads can be watched forming."""
from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QWidget

from app.state import AppState
from app.widgets.probe_slider import ProbeSlider, step_text

SHOW_TIP = ("Show the probe text's attention recorded at each evaluation of the last training run instead of a "
            "run on the text above")


class ProbeBar(ProbeSlider):
    """"Over training" over the app state's attention probes. Public: check, slider, label, play_button, showing."""

    showing_changed = Signal(bool)  # "Over training" was ticked (True) or unticked (False)
    probe_chosen = Signal(object)  # an engine AttentionProbeEvent to show (only while ticked)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(SHOW_TIP, "Training step at which the maps were recorded",
                         "Step through the recorded training steps", parent)
        self.state = state
        self.label.setMinimumWidth(150)
        self.check.toggled.connect(self._on_toggled)
        self.slider.valueChanged.connect(self._on_step)

    def show_probes(self, on: bool) -> None:
        self.check.setChecked(on)

    def refresh(self, show_if_idle: bool) -> None:
        """The recorded probes changed. `show_if_idle`: nothing else is on screen, so tick "Over training"."""
        probes = self.state.attention_probes
        self.set_count(len(probes))
        if not probes:
            self.label.setText("no probes recorded yet")
            self.check.setToolTip("Train with a probe text: its attention is recorded at each evaluation")
            return
        self.check.setToolTip(SHOW_TIP)
        if show_if_idle and not self.showing:
            self.show_probes(True)  # nothing else to show: watch the heads form during training
        else:
            self._on_step(self.slider.value())

    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        if on:
            self._on_step(self.slider.value())
        self.showing_changed.emit(on)

    @Slot(int)
    def _on_step(self, index: int) -> None:
        probes = self.state.attention_probes
        if not probes:
            return
        index = max(0, min(index, len(probes) - 1))
        probe = probes[index]
        self.label.setText(step_text(probe.step, index, len(probes)))
        if self.showing:
            self.probe_chosen.emit(probe)
