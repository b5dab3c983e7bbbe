"""The row of the Attention tab that picks what the big heatmap shows (one head, a layer's mean over heads,
or the rollout; which layer and head), with Fit / Read tokens for its zoom and the PNG / CSV exports."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

MODE_HEAD, MODE_MEAN, MODE_ROLLOUT = "head", "mean", "rollout"


class ViewControls(QWidget):
    """Public: mode, layer, head, reset_button, read_button, png_button, csv_button, view_mode."""

    changed = Signal()  # the mode, layer or head changed

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItem("One head", MODE_HEAD)
        self.mode.addItem("Mean over heads", MODE_MEAN)
        self.mode.addItem("Rollout (all layers)", MODE_ROLLOUT)
        self.mode.setToolTip("One head's weights; the mean of a layer's heads; or attention rollout: "
                             "the layers' mean maps (plus the residual path) multiplied through the model, "
                             "an estimate of how much each input token flows into each position")
        self.layer = QSpinBox()
        self.layer.setPrefix("layer ")
        self.layer.setToolTip("Which transformer block (0 is the first, nearest the input)")
        self.head = QSpinBox()
        self.head.setPrefix("head ")
        self.head.setToolTip("Which attention head of that block: each head learns its own pattern")
        self.reset_button = QPushButton("Fit")
        self.reset_button.setToolTip("Zoom out to the whole map (scroll to zoom, drag to pan)")
        self.read_button = QPushButton("Read tokens")
        self.read_button.setToolTip("Zoom in until every token on both axes has its label, around the chosen "
                                    "query; drag to move along the text")
        self.png_button = QPushButton("Export PNG…")
        self.csv_button = QPushButton("Export CSV…")
        self.png_button.setToolTip("Save the heatmap with its token labels as an image")
        self.csv_button.setToolTip("Save the matrix shown, with token labels, as CSV (rows: queries, columns: keys)")
        for w in (self.mode, self.layer, self.head):
            w.setMinimumWidth(90)
        self.mode.currentIndexChanged.connect(self.changed)
        self.layer.valueChanged.connect(self.changed)
        self.head.valueChanged.connect(self.changed)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Show:"))
        layout.addWidget(self.mode)
        layout.addWidget(self.layer)
        layout.addWidget(self.head)
        layout.addWidget(self.reset_button)
        layout.addWidget(self.read_button)
        layout.addStretch(1)
        layout.addWidget(self.png_button)
        layout.addWidget(self.csv_button)

    @property
    def view_mode(self) -> str:
        return self.mode.currentData()

    def set_shape(self, layers: int, heads: int) -> None:
        """The maps on screen have this many layers and heads (the spin boxes' ranges; no signal)."""
        for spin, n in ((self.layer, layers), (self.head, heads)):
            spin.blockSignals(True)
            spin.setRange(0, n - 1)
            spin.blockSignals(False)

    def open(self, layer: int, head: int | None) -> None:
        """Show one layer's head (None: the layer's mean over heads), with one `changed` at the end."""
        for w in (self.mode, self.layer, self.head):
            w.blockSignals(True)
        self.layer.setValue(layer)
        if head is None:
            self.mode.setCurrentIndex(self.mode.findData(MODE_MEAN))
        else:
            self.mode.setCurrentIndex(self.mode.findData(MODE_HEAD))
            self.head.setValue(head)
        for w in (self.mode, self.layer, self.head):
            w.blockSignals(False)
        self.changed.emit()

    def set_enabled_for(self, has_maps: bool) -> None:
        """Enable what applies: the layer except for the rollout, the head only for one head."""
        mode = self.view_mode
        self.layer.setEnabled(has_maps and mode != MODE_ROLLOUT)
        self.head.setEnabled(has_maps and mode == MODE_HEAD)
        for w in (self.mode, self.png_button, self.csv_button, self.reset_button, self.read_button):
            w.setEnabled(has_maps)
