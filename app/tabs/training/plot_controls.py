"""The row of controls above the training plots: smoothing, raw line, log scale, the x axis, box zoom and
Reset view. It only holds the widgets; TrainingPlots connects them."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

from app.tabs.training.x_axis import X_MODES, X_TOOLTIP


class PlotControls(QWidget):
    """Public: smoothing_slider, smoothing_label, raw_check, log_check, x_combo, zoom_button, reset_button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(60)
        self.smoothing_slider.setFixedWidth(100)
        self.smoothing_slider.setToolTip(
            "Smoothing of the training loss: an exponential moving average (bias-corrected, as TensorBoard).\n"
            "0 shows the raw values; 0.99 averages over roughly the last hundred steps.")
        self.smoothing_label = QLabel()
        self.smoothing_label.setMinimumWidth(self.smoothing_label.fontMetrics().horizontalAdvance("0.00") + 4)
        self.raw_check = QCheckBox("Raw")
        self.raw_check.setChecked(True)
        self.raw_check.setToolTip("Also draw the unsmoothed loss of every step, paler, under the smoothed line")
        self.log_check = QCheckBox("Log y")
        self.log_check.setToolTip("Logarithmic y axis for the loss (early drops and late gains both visible)")
        self.x_combo = QComboBox()
        self.x_combo.addItems([mode.choice for mode in X_MODES])
        self.x_combo.setToolTip(X_TOOLTIP)
        self.zoom_button = QToolButton()
        self.zoom_button.setText("Box zoom")
        self.zoom_button.setCheckable(True)
        self.zoom_button.setToolTip("Drag a box over a plot to zoom into it (otherwise dragging pans, the wheel "
                                    "and right-drag zoom)")
        self.reset_button = QToolButton()
        self.reset_button.setText("Reset view")
        self.reset_button.setToolTip("Undo zooming and panning: the plots follow the latest run again")

        controls = QHBoxLayout(self)
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smoothing_slider)
        controls.addWidget(self.smoothing_label)
        controls.addWidget(self.raw_check)
        controls.addWidget(self.log_check)
        controls.addSpacing(6)
        controls.addWidget(QLabel("x axis"))
        controls.addWidget(self.x_combo)
        controls.addStretch(1)
        controls.addWidget(self.zoom_button)
        controls.addWidget(self.reset_button)
