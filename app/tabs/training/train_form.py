"""Settings of a training run (steps, batch, learning rate, ...) with the schedule they make."""
from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from app.tabs.training.lr_preview import LRPreview
from app.widgets.forms import share_tooltips_with_labels
from engine import (
    TRAINING_PRECISIONS,
    TrainConfig,
    available_devices,
    pick_device,
    precision_problem,
    preferred_training_precision,
)

TOOLTIPS = {
    "steps": "Optimizer updates to run. Each one reads batch x grad accum sequences of context_length tokens.",
    "batch_size": "Sequences processed together in one forward/backward pass (per GPU under torchrun).\n"
                  "Bigger batches give smoother gradients and use more memory.",
    "grad_accum": "Gradient accumulation: add up the gradients of this many batches before one update,\n"
                  "to act like a batch this many times larger without the memory.",
    "lr": "Learning rate: the size of each optimizer step at its peak. Too high and the loss blows up;\n"
          "too low and it crawls. Small models like 1e-3; fine-tuning wants less (1e-4 or lower).",
    "warmup_steps": "Steps over which the learning rate ramps up linearly from near zero to its peak,\n"
                    "before it decays along a cosine to a tenth of the peak.",
    "eval_interval": "Every this many steps, measure the loss on held-out validation text (10% of the corpus),\n"
                     "draw a sample and record the attention of the probe text.",
    "eval_batches": "At most this many batches per split in an automatic evaluation (Eval tokens: auto).",
    "eval_tokens": "Tokens of validation (and of training) text read at each evaluation: more gives a steadier\n"
                   "curve, and takes longer. auto: about 10% of the training time between two evaluations;\n"
                   "a run skips the evaluation before its first step unless it takes a second or two.",
    "sample_tokens": "Length of the sample text written at each evaluation (0: no samples).",
    "precision": "Number format of the arithmetic. fp32 is exact and works everywhere; bf16 (mixed precision)\n"
                 "is faster on GPUs and recent CPUs with the same range and fewer digits; fp16 needs a CUDA GPU\n"
                 "and loss scaling. Starts at bf16 where the device runs it natively (a GPU with bf16, a CPU with\n"
                 "AVX512-BF16 or AMX: about twice as fast as fp32 there), else at fp32.",
    "device": "Where to train: auto picks a CUDA GPU, then Apple's GPU (MPS), then the CPU.",
    "compile": "torch.compile the model first: slower to start (tens of seconds), faster per step on GPUs.",
    "seed": "Seed of the random draws (initial weights, batches, dropout): the same seed repeats a run exactly.",
}


class ScientificSpinBox(QDoubleSpinBox):
    """A positive number shown as 1e-3 / 0.0003, stepped by ~26% (ten steps per decade)."""

    def __init__(self, lo: float, hi: float, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(10)
        self.setRange(lo, hi)

    def textFromValue(self, value: float) -> str:
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            ok = stripped == "" or all(c in "0123456789.eE-+" for c in stripped)
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        state = QValidator.State.Acceptable if self.minimum() <= value <= self.maximum() else \
            QValidator.State.Intermediate
        return state, text, pos

    def stepBy(self, steps: int) -> None:
        value = self.value() * 10 ** (steps / 10)
        self.setValue(float(f"{value:.2g}") if value > 0 else self.minimum())


def _spin(lo: int, hi: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setGroupSeparatorShown(True)
    box.setToolTip(tip)
    return box


class TrainSettingsForm(QWidget):
    """Edits the TrainConfig fields a person cares about; the rest keep their defaults."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        d = TrainConfig()
        self.steps = _spin(1, 10_000_000, d.steps, TOOLTIPS["steps"])
        self.batch_size = _spin(1, 65536, d.batch_size, TOOLTIPS["batch_size"])
        self.grad_accum = _spin(1, 4096, d.grad_accum, TOOLTIPS["grad_accum"])
        self.lr = ScientificSpinBox(1e-7, 1.0)
        self.lr.setValue(d.lr)
        self.lr.setToolTip(TOOLTIPS["lr"])
        self.warmup_steps = _spin(0, 10_000_000, d.warmup_steps, TOOLTIPS["warmup_steps"])
        self.eval_interval = _spin(1, 10_000_000, d.eval_interval, TOOLTIPS["eval_interval"])
        self.eval_batches = _spin(1, 10_000, d.eval_batches, TOOLTIPS["eval_batches"])
        self.eval_tokens = _spin(0, 2**31 - 1, d.eval_tokens, TOOLTIPS["eval_tokens"])
        self.eval_tokens.setSpecialValueText("auto")
        self.eval_tokens.setSingleStep(1024)
        self.sample_tokens = _spin(0, 100_000, d.sample_tokens, TOOLTIPS["sample_tokens"])
        self.precision = QComboBox()
        self.precision.addItems(TRAINING_PRECISIONS)
        self.precision.setToolTip(TOOLTIPS["precision"])
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip(TOOLTIPS["device"])
        # The precision follows the device until the user picks one (or a saved run sets it).
        self._precision_chosen = False
        self._follow_device_precision()
        self.compile = QCheckBox("torch.compile")
        self.compile.setToolTip(TOOLTIPS["compile"])
        self.seed = _spin(0, 2**31 - 1, d.seed, TOOLTIPS["seed"])
        self.seed.setGroupSeparatorShown(False)
        self.budget_label = QLabel()
        self.budget_label.setObjectName("mutedLabel")
        self.budget_label.setWordWrap(True)
        self.problem_label = QLabel()
        self.problem_label.setObjectName("errorLabel")
        self.problem_label.setWordWrap(True)
        self.problem_label.setVisible(False)
        self.preview = LRPreview()
        self._context_length = 128

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Grad accumulation", self.grad_accum)
        form.addRow("Learning rate", self.lr)
        form.addRow("Warm-up steps", self.warmup_steps)
        form.addRow("Eval every", self.eval_interval)
        form.addRow("Eval tokens", self.eval_tokens)
        form.addRow("Eval batches (max)", self.eval_batches)
        form.addRow("Sample tokens", self.sample_tokens)
        form.addRow("Precision", self.precision)
        form.addRow("Device", self.device)
        form.addRow("Seed", self.seed)
        form.addRow("", self.compile)
        share_tooltips_with_labels(form)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.budget_label)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.preview)

        for box in (self.steps, self.batch_size, self.grad_accum, self.warmup_steps, self.eval_interval,
                    self.eval_batches, self.eval_tokens, self.sample_tokens, self.seed):
            box.valueChanged.connect(self._on_changed)
        self.lr.valueChanged.connect(self._on_changed)
        self.precision.currentIndexChanged.connect(self._on_changed)
        self.precision.activated.connect(self._on_precision_chosen)
        self.device.currentIndexChanged.connect(self._follow_device_precision)
        self.device.currentIndexChanged.connect(self._on_changed)
        self.compile.toggled.connect(self._on_changed)
        self._on_changed()

    # ------------------------------------------------------------------ values

    def values(self) -> dict[str, Any]:
        return dict(steps=self.steps.value(), batch_size=self.batch_size.value(), grad_accum=self.grad_accum.value(),
                    lr=float(f"{self.lr.value():.6g}"), warmup_steps=self.warmup_steps.value(),
                    eval_interval=self.eval_interval.value(), eval_batches=self.eval_batches.value(),
                    eval_tokens=self.eval_tokens.value(),
                    sample_tokens=self.sample_tokens.value(), precision=self.precision.currentText(),
                    device=self.device.currentText(), compile=self.compile.isChecked(), seed=self.seed.value())

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig (samples at every evaluation); raises ValueError if a value is out of range."""
        v = self.values()
        return TrainConfig(**v, sample_interval=v["eval_interval"])

    def problem(self) -> str | None:
        """Why these settings cannot run here, or None."""
        try:
            self.train_config()
        except ValueError as e:
            return str(e)
        try:
            device = pick_device(self.device.currentText())
        except ValueError as e:  # a device saved on another machine
            return str(e)
        return precision_problem(self.precision.currentText(), device)

    def _spins(self) -> dict[str, QSpinBox]:
        return {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "warmup_steps": self.warmup_steps, "eval_interval": self.eval_interval,
                "eval_batches": self.eval_batches, "eval_tokens": self.eval_tokens, "sample_tokens": self.sample_tokens,
                "seed": self.seed}

    def fitted_values(self, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A saved train_config's values as this form can hold them, and a note for each one it had to change.

        Nothing is set here (a restore is worked out completely before any widget changes). The engine
        accepts values a spin box cannot hold (a seed of 2**63, an evaluation interval of 10**12): those are
        clamped to the box's range, and said so. Missing or malformed values are left out."""
        values: dict[str, Any] = {}
        notes: list[str] = []
        for key, box in self._spins().items():
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                notes.append(f"{key} {value} is not a number the form can show (kept {box.value():,})")
                continue
            whole = int(value)
            fitted = min(max(whole, box.minimum()), box.maximum())
            if fitted != whole:
                notes.append(f"{key} {_short_int(whole)} → {fitted:,} (the form's limit)")
            values[key] = fitted
        lr = data.get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0:
            fitted_lr = min(max(float(lr), self.lr.minimum()), self.lr.maximum())
            if fitted_lr != float(lr):
                notes.append(f"lr {lr:g} → {fitted_lr:g} (the form's limit)")
            values["lr"] = fitted_lr
        for key, combo in (("precision", self.precision), ("device", self.device)):
            value = data.get(key)
            if isinstance(value, str):
                if combo.findText(value) >= 0:
                    values[key] = value
                else:
                    notes.append(f"{key} {value[:20]!r} is not available here (kept {combo.currentText()})")
        if isinstance(data.get("compile"), bool):
            values["compile"] = data["compile"]
        return values, notes

    def apply_values(self, values: dict[str, Any]) -> None:
        """Set the fields from `fitted_values`' result (every value already fits its widget)."""
        for key, box in self._spins().items():
            if key in values:
                box.setValue(values[key])
        if "lr" in values:
            self.lr.setValue(values["lr"])
        for key, combo in (("device", self.device), ("precision", self.precision)):
            if key in values:
                combo.setCurrentText(values[key])
        if "precision" in values:
            self._precision_chosen = True
        if "compile" in values:
            self.compile.setChecked(values["compile"])

    def set_values(self, data: dict[str, Any]) -> list[str]:
        """Fill from a saved train_config dict; returns notes on values that had to be clamped or skipped."""
        values, notes = self.fitted_values(data)
        self.apply_values(values)
        return notes

    def set_context_length(self, context_length: int) -> None:
        self._context_length = context_length
        self._update_budget()

    # ------------------------------------------------------------------ reactions

    @Slot()
    def _on_precision_chosen(self) -> None:
        self._precision_chosen = True

    @Slot()
    def _follow_device_precision(self) -> None:
        if self._precision_chosen:
            return
        try:
            device = pick_device(self.device.currentText())
        except ValueError:  # a device this machine lacks: problem() says so
            return
        self.precision.setCurrentText(preferred_training_precision(device))

    @Slot()
    def _on_changed(self) -> None:
        v = self.values()
        self.preview.set_schedule(v["steps"], v["lr"], v["warmup_steps"])
        problem = self.problem()
        self.problem_label.setText(problem or "")
        self.problem_label.setVisible(problem is not None)
        self._update_budget()
        self.changed.emit()

    def _update_budget(self) -> None:
        v = self.values()
        per_step = v["batch_size"] * v["grad_accum"] * self._context_length
        total = per_step * v["steps"]
        self.budget_label.setText(f"{per_step:,} tokens per step · {_si(total)} tokens in all")
        self.budget_label.setToolTip("batch size x grad accumulation x context_length tokens per optimizer step")


def _short_int(value: int) -> str:
    """A whole number for a note, however many digits it has."""
    if abs(value) < 10**15:
        return f"{value:,}"
    return f"{'-' if value < 0 else ''}about 10^{len(str(abs(value))) - 1}" if abs(value) < 10**4000 else "a huge number"


def _si(x: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:.3g} {suffix}"
    return f"{int(x)}"
