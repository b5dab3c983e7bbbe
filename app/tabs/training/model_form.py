"""The model's shape: a preset and the seven ModelConfig fields, with size and memory as you edit.

The other fields (the family and its Llama-style settings: grouped-query heads, rotary base, ...) come from the
last config set (a preset, or the model being fine-tuned) and are kept as they are.

Invalid combinations (emb_dim not divisible by n_heads, ...) are shown inline in red and make
`config()` return None: the form never raises.
"""
from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.formatting import format_bytes, format_params
from app.widgets.forms import share_tooltips_with_labels
from engine import (
    BYTES_PER_PARAM,
    MAX_CONTEXT_LENGTH,
    MAX_EMB_DIM,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_VOCAB_SIZE,
    PRESETS,
    ModelConfig,
)

CUSTOM = "custom"

TOOLTIPS = {
    "preset": "A ready-made model shape. tiny learns a toy task on a laptop CPU in a minute; small is nanoGPT's\n"
              "Shakespeare model; gpt2-124m is the shape of the smallest GPT-2. Editing a field makes it custom.",
    "vocab_size": "How many different tokens the model knows: the size of its embedding table and output layer.\n"
                  "Set by the tokenizer (GPT-2's BPE has 50,257; a character tokenizer has one per character).",
    "context_length": "The longest stretch of tokens the model sees at once (its attention window). GPT-2: 1,024.",
    "emb_dim": "Length of the vector that stands for each token inside the model (GPT-2 small: 768).\n"
               "Each block's feed-forward layer is 4x wider.",
    "n_heads": "Attention heads per block: each can look for a different pattern. emb_dim must divide evenly\n"
               "among them (GPT-2 small: 12).",
    "n_layers": "How many transformer blocks are stacked (GPT-2 small: 12).",
    "drop_rate": "Fraction of activations zeroed at random while training, to fight overfitting\n"
                 "(0-0.2 is typical; always off when generating).",
    "qkv_bias": "Give the query/key/value projections a bias term (GPT-2's original weights have one).",
}


def _spin(lo: int, hi: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setGroupSeparatorShown(True)
    box.setToolTip(tip)
    box.setKeyboardTracking(True)
    return box


class ModelForm(QWidget):
    """Edits a ModelConfig. `config()` is None while the fields make no valid model."""

    config_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._updating = False
        self._base: ModelConfig = PRESETS["tiny"]  # where the fields the form doesn't show come from
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS) + [CUSTOM])
        self.preset_combo.setToolTip(TOOLTIPS["preset"])
        self.vocab_size = _spin(1, MAX_VOCAB_SIZE, TOOLTIPS["vocab_size"])
        # The tokenizer decides the vocabulary; the field shows it (for the size estimate) but is not typed in.
        self.vocab_size.setReadOnly(True)
        self.vocab_size.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
        self.context_length = _spin(1, MAX_CONTEXT_LENGTH, TOOLTIPS["context_length"])
        self.emb_dim = _spin(1, MAX_EMB_DIM, TOOLTIPS["emb_dim"])
        self.n_heads = _spin(1, MAX_HEADS, TOOLTIPS["n_heads"])
        self.n_layers = _spin(1, MAX_LAYERS, TOOLTIPS["n_layers"])
        self.drop_rate = QDoubleSpinBox()
        self.drop_rate.setRange(0.0, 0.95)
        self.drop_rate.setSingleStep(0.05)
        self.drop_rate.setDecimals(2)
        self.drop_rate.setToolTip(TOOLTIPS["drop_rate"])
        self.qkv_bias = QCheckBox("bias on query/key/value")
        self.qkv_bias.setToolTip(TOOLTIPS["qkv_bias"])

        self.params_label = QLabel()
        self.params_label.setObjectName("bigNumber")
        self.params_label.setToolTip("Learned weights and biases (the output layer shares the embedding table)")
        self.memory_labels = {p: QLabel() for p in ("fp32", "fp16", "bf16", "int8")}
        self.error_label = QLabel()
        self.error_label.setObjectName("errorLabel")
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Preset", self.preset_combo)
        form.addRow("vocab_size", self.vocab_size)
        form.addRow("context_length", self.context_length)
        form.addRow("emb_dim", self.emb_dim)
        form.addRow("n_heads", self.n_heads)
        form.addRow("n_layers", self.n_layers)
        form.addRow("drop_rate", self.drop_rate)
        form.addRow("qkv_bias", self.qkv_bias)
        share_tooltips_with_labels(form)

        memory = QGridLayout()
        memory.setContentsMargins(0, 4, 0, 0)
        memory.setHorizontalSpacing(12)
        memory.addWidget(QLabel("Parameters"), 0, 0)
        memory.addWidget(self.params_label, 0, 1, 1, 3)
        for i, (precision, label) in enumerate(self.memory_labels.items()):
            name = QLabel(precision.upper())
            name.setObjectName("mutedLabel")
            tip = (f"Memory of the weights alone in {precision.upper()}: {BYTES_PER_PARAM[precision]} "
                   f"byte(s) per parameter. Training with AdamW needs about 4x the FP32 figure, plus activations.")
            name.setToolTip(tip)
            label.setToolTip(tip)
            memory.addWidget(name, 1 + i // 2, (i % 2) * 2)
            memory.addWidget(label, 1 + i // 2, (i % 2) * 2 + 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(memory)
        layout.addWidget(self.error_label)

        self.preset_combo.currentTextChanged.connect(self._on_preset)
        for box in (self.vocab_size, self.context_length, self.emb_dim, self.n_heads, self.n_layers):
            box.valueChanged.connect(self._on_field_edited)
        self.drop_rate.valueChanged.connect(self._on_field_edited)
        self.qkv_bias.toggled.connect(self._on_field_edited)

        self.set_config(PRESETS["tiny"])

    # ------------------------------------------------------------------ values

    def _values(self) -> dict:
        return dict(vocab_size=self.vocab_size.value(), context_length=self.context_length.value(),
                    emb_dim=self.emb_dim.value(), n_heads=self.n_heads.value(), n_layers=self.n_layers.value(),
                    drop_rate=round(self.drop_rate.value(), 4), qkv_bias=self.qkv_bias.isChecked())

    def config(self) -> ModelConfig | None:
        try:
            return self._base.with_changes(**self._values())
        except ValueError:
            return None

    def error(self) -> str | None:
        try:
            self._base.with_changes(**self._values())
        except ValueError as e:
            return str(e)
        return None

    def fit_notes(self, config: ModelConfig) -> list[str]:
        """What `set_config(config)` would have to change to fit the form (the engine accepts more)."""
        if config.drop_rate > self.drop_rate.maximum():
            return [f"drop_rate {config.drop_rate:g} → {self.drop_rate.maximum():g} (the form's limit)"]
        return []

    def set_config(self, config: ModelConfig) -> None:
        self._base = config
        self._updating = True
        try:
            self.vocab_size.setValue(config.vocab_size)
            self._set_shape(config)
            self.preset_combo.setCurrentText(self._matching_preset())
        finally:
            self._updating = False
        self._refresh()

    def set_vocab_size(self, vocab_size: int) -> None:
        """The tokenizer's vocabulary (the only way vocab_size changes)."""
        if vocab_size != self.vocab_size.value():
            self.vocab_size.setValue(vocab_size)

    def _set_shape(self, config: ModelConfig) -> None:
        self.context_length.setValue(config.context_length)
        self.emb_dim.setValue(config.emb_dim)
        self.n_heads.setValue(config.n_heads)
        self.n_layers.setValue(config.n_layers)
        self.drop_rate.setValue(config.drop_rate)
        self.qkv_bias.setChecked(config.qkv_bias)

    def _matching_preset(self) -> str:
        values = self._values()
        for name, preset in PRESETS.items():
            if preset.arch == self._base.arch and all(values[k] == getattr(preset, k) for k in values
                                                      if k != "vocab_size"):
                return name
        return CUSTOM

    def set_locked(self, locked: bool, reason: str = "") -> None:
        """Fine-tuning: the shape is the current model's and cannot change."""
        for w in (self.preset_combo, self.context_length, self.emb_dim, self.n_heads, self.n_layers,
                  self.qkv_bias):
            w.setEnabled(not locked)
            w.setToolTip(reason if locked else TOOLTIPS.get(self._field_name(w), w.toolTip()))
        # Dropout may change when fine-tuning: it is not part of the weights.

    def _field_name(self, widget: QWidget) -> str:
        for name in TOOLTIPS:
            if getattr(self, name, None) is widget or (name == "preset" and widget is self.preset_combo):
                return name
        return ""

    # ------------------------------------------------------------------ reactions

    @Slot(str)
    def _on_preset(self, name: str) -> None:
        if self._updating or name not in PRESETS:
            return
        self._updating = True
        try:
            self._base = PRESETS[name]
            self._set_shape(PRESETS[name])
        finally:
            self._updating = False
        self._refresh()

    @Slot()
    def _on_field_edited(self) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.preset_combo.setCurrentText(self._matching_preset())
        finally:
            self._updating = False
        self._refresh()

    def _refresh(self) -> None:
        error = self.error()
        config = self.config()
        if config is None:
            self.params_label.setText("–")
            for label in self.memory_labels.values():
                label.setText("–")
        else:
            self.params_label.setText(f"{format_params(config.num_params())}  ({config.num_params():,})")
            for precision, label in self.memory_labels.items():
                label.setText(format_bytes(config.weights_bytes(precision)))
        self.error_label.setText(error or "")
        self.error_label.setVisible(error is not None)
        self.config_changed.emit()
