"""The toolbar over the Generation tab's decoder columns: colour by probability (with its legend), live
regenerate, and + Add decoder."""
from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget

from app.tabs.generation.token_view import ProbabilityLegend

MAX_COLUMNS = 4


class DecodersBar(QWidget):
    """Public: colour_toggle, legend, live_toggle, add_button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.colour_toggle = QCheckBox("Colour by probability")
        self.colour_toggle.setChecked(True)
        self.colour_toggle.setToolTip("Shade each generated token by the probability its decoder gave it")
        self.colour_toggle.toggled.connect(self._on_colour_toggled)
        self.legend = ProbabilityLegend()
        self.live_toggle = QCheckBox("Live regenerate")
        self.live_toggle.setToolTip("Regenerate whenever a slider is released or a preset picked")
        self.add_button = QPushButton("+ Add decoder")
        self.add_button.setToolTip(f"Add a decoder column (up to {MAX_COLUMNS}) to compare settings side by side")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Decoders</b>"))
        layout.addSpacing(12)
        layout.addWidget(self.colour_toggle)
        layout.addWidget(self.legend)
        layout.addSpacing(12)
        layout.addWidget(self.live_toggle)
        layout.addStretch(1)
        layout.addWidget(self.add_button)

    @Slot(bool)
    def _on_colour_toggled(self, on: bool) -> None:
        self.legend.setVisible(on)
