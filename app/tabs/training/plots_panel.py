"""The Training tab's plots panel: the live curves of every run, and the samples of the current run under them."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

from app.settings import Settings
from app.tabs.training.loss_plot import TrainingPlots
from app.tabs.training.samples_view import SamplesView
from engine import SampleEvent


class PlotsPanel(QWidget):
    """Public: plots (TrainingPlots), samples (SamplesView), and its sample_title and sample_text."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plots = TrainingPlots()
        self.samples = SamplesView()
        self.sample_title = self.samples.title
        self.sample_text = self.samples.text

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.plots)
        self.splitter.addWidget(self.samples)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self.plots.step_clicked.connect(self.samples.show_step)

    def show_sample(self, event: SampleEvent) -> None:
        self.samples.add(event)

    def clear_sample(self) -> None:
        """A new run: its samples start afresh."""
        self.samples.clear()

    def restore_settings(self, s: Settings) -> None:
        self.plots.smoothing_slider.setValue(s.value("training/smoothing", 60))
        self.plots.log_check.setChecked(s.value("training/log_scale", False))
        index = s.value("training/x_axis", 0)
        if 0 <= index < self.plots.x_combo.count():
            self.plots.x_combo.setCurrentIndex(index)

    def save_settings(self, s: Settings) -> None:
        s.set_value("training/smoothing", self.plots.smoothing_slider.value())
        s.set_value("training/log_scale", self.plots.log_check.isChecked())
        s.set_value("training/x_axis", self.plots.x_combo.currentIndex())
