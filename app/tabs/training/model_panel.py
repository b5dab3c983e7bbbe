"""The Training tab's model panel: start from scratch or from the current model, and the model's shape.

Fine-tuning locks the shape to the current model's (the shape typed for scratch comes back when
Scratch is chosen again); `config()` is the shape a new run gets.
"""
from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QRadioButton, QVBoxLayout, QWidget

from app.state import AppState
from app.tabs.training.boxes import group_box
from app.tabs.training.model_form import ModelForm
from engine import ModelConfig


class ModelPanel(QWidget):
    """Scratch / Current model radios over the ModelForm. Public: scratch_radio, finetune_radio, form."""

    fine_tune_changed = Signal(bool)  # Scratch or Current model was chosen
    changed = Signal()  # the shape or the starting point changed

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._scratch_config: ModelConfig | None = None
        self.scratch_radio = QRadioButton("Scratch")
        self.scratch_radio.setToolTip("Pretraining: new random weights with the shape below")
        self.finetune_radio = QRadioButton("Current model")
        self.finetune_radio.setToolTip("Fine-tuning: keep training the current model's weights (its shape and "
                                       "tokenizer stay); use a lower learning rate")
        self.scratch_radio.setChecked(True)
        self.start_group = QButtonGroup(self)
        self.start_group.addButton(self.scratch_radio)
        self.start_group.addButton(self.finetune_radio)
        self.form = ModelForm()

        radios = QHBoxLayout()
        radios.addWidget(self.scratch_radio)
        radios.addWidget(self.finetune_radio)
        radios.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(group_box("Start from", radios))
        layout.addWidget(group_box("Model", self.form))

        self.start_group.buttonToggled.connect(self._on_start_toggled)
        self.form.config_changed.connect(self.changed)
        state.model_changed.connect(self._on_model_changed)
        self.refresh()

    @property
    def fine_tune(self) -> bool:
        return self.finetune_radio.isChecked()

    def config(self) -> ModelConfig | None:
        """The shape of the next run (None while the fields make no valid model)."""
        return self.form.config()

    def refresh(self) -> None:
        """Fine-tuning needs a current model and no run in progress."""
        has_model = self.state.model is not None
        self.finetune_radio.setEnabled(has_model and not self.state.training.running)
        if not has_model and self.fine_tune:
            self.scratch_radio.setChecked(True)

    def set_vocab_size(self, vocab_size: int) -> None:
        """The tokenizer's vocabulary for a model from scratch (a fine-tuned model keeps its own)."""
        if not self.fine_tune:
            self.form.set_vocab_size(vocab_size)

    def show_config(self, config: ModelConfig) -> None:
        """An opened model's shape, shown for the next run from scratch."""
        if not self.fine_tune:
            self.form.set_config(config)

    @Slot()
    def _on_start_toggled(self, *_args) -> None:
        if self.fine_tune and self.state.model is not None:
            self._scratch_config = self.form.config()
            self.form.set_config(self.state.config)
            self.form.set_locked(True, "Fine-tuning keeps the current model's shape")
        else:
            self.form.set_locked(False)
            if self._scratch_config is not None:
                self.form.set_config(self._scratch_config)
        self.fine_tune_changed.emit(self.fine_tune)
        self.changed.emit()

    @Slot()
    def _on_model_changed(self) -> None:
        self.refresh()
        if self.fine_tune and self.state.model is not None:
            self.form.set_config(self.state.config)

