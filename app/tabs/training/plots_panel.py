"""The Training tab's plots panel: the live curves of every run, and the latest sample text under them."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from app.settings import Settings
from app.tabs.training.loss_plot import TrainingPlots
from app.theme import mono_font
from engine import SampleEvent


class PlotsPanel(QWidget):
    """Public: plots (TrainingPlots), sample_title, sample_text."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plots = TrainingPlots()
        self.sample_title = QLabel("Latest sample")
        self.sample_title.setObjectName("sectionTitle")
        self.sample_text = QPlainTextEdit()
        self.sample_text.setReadOnly(True)
        self.sample_text.setFont(mono_font())
        self.sample_text.setPlaceholderText("Text the model writes at each evaluation appears here: first noise, "
                                            "then words, then something like the corpus.")
        self.sample_text.setMinimumHeight(70)
        sample_box = QWidget()
        sample_layout = QVBoxLayout(sample_box)
        sample_layout.setContentsMargins(0, 4, 0, 0)
        sample_layout.addWidget(self.sample_title)
        sample_layout.addWidget(self.sample_text)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.plots)
        self.splitter.addWidget(sample_box)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

    def show_sample(self, event: SampleEvent) -> None:
        self.sample_title.setText(f"Latest sample (step {event.step:,})")
        self.sample_text.setPlainText(event.prompt + event.text)

    def clear_sample(self) -> None:
        self.sample_text.clear()

    def restore_settings(self, s: Settings) -> None:
        self.plots.smoothing_slider.setValue(s.value("training/smoothing", 60))
        self.plots.log_check.setChecked(s.value("training/log_scale", False))
        self.plots.x_combo.setCurrentIndex(s.value("training/x_axis", 0))

    def save_settings(self, s: Settings) -> None:
        s.set_value("training/smoothing", self.plots.smoothing_slider.value())
        s.set_value("training/log_scale", self.plots.log_check.isChecked())
        s.set_value("training/x_axis", self.plots.x_combo.currentIndex())
