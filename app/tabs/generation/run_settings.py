"""The Generation tab's shared settings, in one row under the prompt: max new tokens, seed, precision,
stop strings, stop at end of text, Generate / Stop, and the speed of the last run.

One row (not a side panel) leaves the height to the decoders' output at 1280×720; the row wraps onto
two lines when the window is narrower than it. `changed` fires when a setting that shapes the output
moves (the tab marks the shown text stale).
"""
from __future__ import annotations

import contextlib
import random

import torch
from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QWidget,
)

from app.formatting import format_bytes
from app.tabs.generation.jobs import parse_stop_strings
from engine import INFERENCE_PRECISIONS, precision_options, weights_memory_bytes

WRAP_WIDTH = 1100  # below this width the row becomes two


def _pair(label: QLabel, *widgets: QWidget) -> QWidget:
    """A label and its field(s), kept together when the row wraps."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(4)
    row.addWidget(label)
    for w in widgets:
        row.addWidget(w)
        label.setToolTip(label.toolTip() or w.toolTip())
    label.setBuddy(widgets[0])
    return box


class RunSettings(QWidget):
    changed = Signal()  # max tokens, seed, precision, stop strings or stop-at-eot changed

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(200)
        self.max_tokens.setToolTip("Max new tokens: each column stops after this many new tokens, even if the "
                                   "text is unfinished.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(1234)
        self.seed.setToolTip("Seed: fixes the random draws, so a run repeats exactly. All columns share the "
                             "same draws, so their differences come from their settings, not from luck.")
        self.dice = QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("Roll a new random seed")
        self.dice.clicked.connect(self.roll_seed)
        self.precision = QComboBox()
        self.precision.setToolTip("Number format of the weights while generating: FP32 takes 4 bytes per "
                                  "parameter, BF16 / FP16 2 (FP16 needs a GPU), INT8 1 (Linear layers "
                                  "quantized, CPU). Smaller is lighter, at some cost in accuracy.")
        self.precision.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for key in INFERENCE_PRECISIONS:
            self.precision.addItem(key.upper(), key)
        self.stop_strings_edit = QLineEdit()
        self.stop_strings_edit.setPlaceholderText("e.g. \\n\\n, END")
        self.stop_strings_edit.setClearButtonEnabled(True)
        self.stop_strings_edit.setToolTip("Stop strings: a column stops once its output contains one of them "
                                          "(the text up to and including it stays). Separate them with commas; "
                                          "write \\n for a newline, \\s for a space, \\, for a comma.")
        self.stop_strings_edit.setMinimumWidth(110)
        self.stop_at_eot = QCheckBox("Stop at end of text")
        self.stop_at_eot.setToolTip("End a column when it produces the tokenizer's end-of-text token "
                                    "(tokenizers without one, like char, never stop early)")

        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setObjectName("primaryButton")
        self.generate_button.setToolTip("Run every column on the prompt as one batched job (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop generating now (Esc); the text so far stays")
        self.speed = QLabel("")
        self.speed.setToolTip("Generation speed: new tokens per second over all columns together")
        font = self.speed.font()
        font.setBold(True)
        self.speed.setFont(font)

        self._parts = [
            _pair(QLabel("Max new tokens"), self.max_tokens),
            _pair(QLabel("Seed"), self.seed, self.dice),
            _pair(QLabel("Precision"), self.precision),
            _pair(QLabel("Stop at"), self.stop_strings_edit),
            self.stop_at_eot,
        ]
        self._buttons = QWidget()
        buttons = QHBoxLayout(self._buttons)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.speed)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(14)
        self.grid.setVerticalSpacing(4)
        self._wrapped: bool | None = None
        self._place(wrapped=False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        self.max_tokens.valueChanged.connect(self.changed)
        self.seed.valueChanged.connect(self.changed)
        self.precision.currentIndexChanged.connect(self.changed)
        self.stop_strings_edit.textChanged.connect(self.changed)
        self.stop_at_eot.toggled.connect(self.changed)

    # layout ----------------------------------------------------------------------------------

    def _place(self, wrapped: bool) -> None:
        """All on one row, or the fields on one and stop options + buttons on a second."""
        if wrapped == self._wrapped:
            return
        self._wrapped = wrapped
        for w in [*self._parts, self._buttons]:
            self.grid.removeWidget(w)
        for i in range(self.grid.columnCount()):
            self.grid.setColumnStretch(i, 0)
        if wrapped:
            for col, w in enumerate(self._parts[:3]):
                self.grid.addWidget(w, 0, col)
            self.grid.addWidget(self._parts[3], 1, 0)
            self.grid.addWidget(self._parts[4], 1, 1)
            self.grid.addWidget(self._buttons, 1, 2, 1, 2)
            self.grid.setColumnStretch(3, 1)
        else:
            for col, w in enumerate(self._parts):
                self.grid.addWidget(w, 0, col)
            self.grid.addWidget(self._buttons, 0, len(self._parts))
            self.grid.setColumnStretch(len(self._parts), 1)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place(wrapped=event.size().width() < WRAP_WIDTH)

    # values ----------------------------------------------------------------------------------

    def stop_strings(self) -> tuple[str, ...]:
        return parse_stop_strings(self.stop_strings_edit.text())

    @property
    def stop_at_eot_on(self) -> bool:
        return self.stop_at_eot.isChecked() and self.stop_at_eot.isEnabled()

    @Slot()
    def roll_seed(self) -> None:
        self.seed.setValue(random.randint(0, self.seed.maximum()))

    def set_running(self, running: bool, has_model: bool) -> None:
        self.generate_button.setEnabled(has_model and not running)
        self.stop_button.setEnabled(running)

    def update_precisions(self, model, device: torch.device) -> None:
        """Each precision with the weights' memory in it; those that cannot run here disabled, with why."""
        problems = precision_options(device, use="inference")
        items: QStandardItemModel = self.precision.model()
        for row in range(items.rowCount()):
            item = items.item(row)
            key = self.precision.itemData(row)
            label = text = key.upper()
            if model is not None:
                with contextlib.suppress(Exception):
                    text = f"{label} · {format_bytes(weights_memory_bytes(model, key))}"
            item.setText(text)
            problem = problems[key]
            item.setEnabled(problem is None)
            item.setToolTip(f"Not here: {problem}" if problem else f"{label}: weights in memory shown beside the name")
        if not items.item(self.precision.currentIndex()).isEnabled():
            self.precision.setCurrentIndex(0)
