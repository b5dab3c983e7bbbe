"""Every sample the model wrote during the current run, browsable by step.

The trainer sends a sample at each evaluation. All of them are kept, so one can go back and read how the
text changed; the newest is shown as it arrives unless an older one is being read (then the view stays
there until the newest is picked again).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from app.theme import mono_font
from engine import SampleEvent

PLACEHOLDER = ("Text the model writes at each evaluation appears here: first noise, then words, then something "
               "like the corpus. Every sample is kept: pick a step to read an earlier one.")


class SamplesView(QWidget):
    """Public: title, step_combo, prev_button, next_button, text, samples (the SampleEvents, oldest first)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.samples: list[SampleEvent] = []
        self._follow = True  # show each new sample (off while an older one is picked)
        self.title = QLabel("Samples")
        self.title.setObjectName("sectionTitle")
        self.step_combo = QComboBox()
        self.step_combo.setToolTip("The step whose sample is shown; every sample of the run is kept.\n"
                                   "Clicking the plots at a step shows the sample written there.")
        self.step_combo.setMinimumContentsLength(12)
        self.prev_button = QToolButton()
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("The sample before")
        self.next_button = QToolButton()
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("The sample after")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(mono_font())
        self.text.setPlaceholderText(PLACEHOLDER)
        self.text.setMinimumHeight(70)

        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.prev_button)
        header.addWidget(self.step_combo)
        header.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.text)

        self.step_combo.currentIndexChanged.connect(self._on_index)
        self.prev_button.clicked.connect(self.show_previous)
        self.next_button.clicked.connect(self.show_next)
        self._update_buttons()

    def add(self, event: SampleEvent) -> None:
        """Keep a new sample; show it unless an older one is being read."""
        self.samples.append(event)
        follow = self._follow
        self.step_combo.blockSignals(True)
        self.step_combo.addItem(f"step {event.step:,}")
        self.step_combo.blockSignals(False)
        if follow or len(self.samples) == 1:
            self.step_combo.setCurrentIndex(len(self.samples) - 1)
        self._update_buttons()

    def clear(self) -> None:
        self.samples.clear()
        self._follow = True
        self.step_combo.blockSignals(True)
        self.step_combo.clear()
        self.step_combo.blockSignals(False)
        self.text.clear()
        self._update_buttons()

    def shown_step(self) -> int | None:
        i = self.step_combo.currentIndex()
        return self.samples[i].step if 0 <= i < len(self.samples) else None

    @Slot(int)
    def show_step(self, step: int) -> None:
        """Show the sample of a step (the nearest earlier one if that step has none)."""
        earlier = [i for i, s in enumerate(self.samples) if s.step <= step]
        if earlier:
            self.step_combo.setCurrentIndex(earlier[-1])

    @Slot()
    def show_previous(self) -> None:
        self.step_combo.setCurrentIndex(max(0, self.step_combo.currentIndex() - 1))

    @Slot()
    def show_next(self) -> None:
        self.step_combo.setCurrentIndex(min(len(self.samples) - 1, self.step_combo.currentIndex() + 1))

    @Slot(int)
    def _on_index(self, i: int) -> None:
        if not 0 <= i < len(self.samples):
            return
        self._follow = i == len(self.samples) - 1
        event = self.samples[i]
        self.text.setPlainText(event.prompt + event.text)
        self._update_buttons()

    def _update_buttons(self) -> None:
        i, n = self.step_combo.currentIndex(), len(self.samples)
        self.prev_button.setEnabled(i > 0)
        self.next_button.setEnabled(0 <= i < n - 1)
        self.step_combo.setEnabled(n > 0)
