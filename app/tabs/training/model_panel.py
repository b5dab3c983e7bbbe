"""The Training tab's model panel: start from scratch or from the current model, and the model's shape.

Fine-tuning locks the shape to the current model's (the shape typed for scratch comes back when
Scratch is chosen again); `config()` is the shape a new run gets.

Under the shape, the memory the run will take (the engine's estimate: weights, gradients, AdamW's moments and
the activations of one micro-batch of the chosen batch and context) against what the device has free; a run
that cannot fit is refused before Start (`memory_problem`), with how to fit it.
"""
from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QRadioButton, QVBoxLayout, QWidget

from app.formatting import format_bytes
from app.state import AppState
from app.tabs.training.boxes import group_box
from app.tabs.training.model_form import ModelForm
from engine import (
    ModelConfig,
    TrainConfig,
    available_memory_bytes,
    pick_device,
    training_memory_parts,
    training_memory_problem,
)


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
        self.training_memory_label = QLabel()
        self.training_memory_label.setObjectName("mutedLabel")
        self.training_memory_label.setWordWrap(True)
        self._train_config: TrainConfig | None = None
        self._memory_problem: str | None = None

        radios = QHBoxLayout()
        radios.addWidget(self.scratch_radio)
        radios.addWidget(self.finetune_radio)
        radios.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(group_box("Start from", radios))
        model = QWidget()
        model_layout = QVBoxLayout(model)
        model_layout.setContentsMargins(0, 0, 0, 0)
        model_layout.addWidget(self.form)
        model_layout.addWidget(self.training_memory_label)
        layout.addWidget(group_box("Model", model))

        self.start_group.buttonToggled.connect(self._on_start_toggled)
        self.form.config_changed.connect(self._on_config_changed)
        state.model_changed.connect(self._on_model_changed)
        self.refresh()
        self._update_memory()

    @property
    def fine_tune(self) -> bool:
        return self.finetune_radio.isChecked()

    def config(self) -> ModelConfig | None:
        """The shape of the next run (None while the fields make no valid model)."""
        return self.form.config()

    def set_train_config(self, train: TrainConfig | None) -> None:
        """The run's settings (batch, precision, device) the memory estimate is for; None while invalid."""
        self._train_config = train
        self._update_memory()

    def memory_problem(self) -> str | None:
        """Why the run cannot fit in the device's free memory (with how to fit it), or None."""
        return self._memory_problem

    def _update_memory(self) -> None:
        config, train = self.config(), self._train_config
        self._memory_problem = None
        if config is None or train is None:
            self.training_memory_label.setText("Training memory: –")
            return
        try:
            device = pick_device(train.device)
        except ValueError:  # a device saved on another machine: the train form says so
            self.training_memory_label.setText("Training memory: –")
            return
        parts = training_memory_parts(config, train)
        need = sum(parts.values())
        free = available_memory_bytes(device)
        where = "GPU" if device.type == "cuda" else "RAM"
        free_text = f" · {format_bytes(free)} {where} free" if free is not None else ""
        self.training_memory_label.setText(f"Training memory ≈ {format_bytes(need)}{free_text}")
        self.training_memory_label.setToolTip(
            f"Estimated peak memory of the run: weights {format_bytes(parts['weights'])} + gradients "
            f"{format_bytes(parts['gradients'])} + AdamW moments {format_bytes(parts['optimizer'])} + activations "
            f"{format_bytes(parts['activations'])} (batch {train.batch_size} × context {config.context_length}, "
            f"{train.precision}).\nA smaller batch or context, bf16 or gradient accumulation (a smaller batch, "
            "accumulated) lower it.")
        self._memory_problem = training_memory_problem(config, train, device, have=free)
        self.training_memory_label.setObjectName("errorLabel" if self._memory_problem else "mutedLabel")
        self.training_memory_label.style().unpolish(self.training_memory_label)
        self.training_memory_label.style().polish(self.training_memory_label)

    @Slot()
    def _on_config_changed(self) -> None:
        self._update_memory()
        self.changed.emit()

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

