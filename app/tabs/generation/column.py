"""One decoder column of the Generation tab: a preset, five sampling sliders and the streamed output.

The column owns no engine code: it turns its sliders into `SamplingSettings` and shows the tokens
the tab hands it. Its signals tell the tab when settings move (recompute the distribution view),
when a drag is released (live regenerate), and which step the mouse is on.
"""
from __future__ import annotations

from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.tabs.generation.presets import (
    CUSTOM,
    SamplingSettings,
    builtin_presets,
    load_preset_file,
    match_preset,
    save_preset_file,
)
from app.tabs.generation.slider import SliderRow, SliderSpec
from app.tabs.generation.token_view import TokenView
from app.widgets.labels import Swatch, set_tone

HOVER_MS = 60
TWO_PER_ROW_WIDTH = 560  # a column at least this wide shows its sliders two to a row (more room for text)
MIN_OUTPUT_LINES = 6
COLUMN_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")  # Okabe-Ito, one per column

SLIDERS = (
    SliderSpec("temperature", "Temperature", 0.0, 2.0, decimals=2, special_text="greedy", tooltip=(
        "Temperature divides the logits before the softmax. Below 1 sharpens the distribution (more "
        "predictable text), above 1 flattens it (more varied, more mistakes). 0 = greedy: always take "
        "the most probable token.")),
    SliderSpec("top_k", "Top-k", 0, 50257, decimals=0, log=True, special_text="off", tooltip=(
        "Top-k: sample only among the k most probable tokens; every other token is removed. "
        "0 = off (all tokens stay). The slider is logarithmic; type an exact k in the box.")),
    SliderSpec("top_p", "Top-p", 0.0, 1.0, decimals=2, tooltip=(
        "Top-p (nucleus): keep the smallest set of most probable tokens whose probabilities add up "
        "to p, and remove the rest; the token that crosses p stays. 1 = off.")),
    SliderSpec("min_p", "Min-p", 0.0, 1.0, decimals=2, special_text="off", tooltip=(
        "Min-p: remove tokens whose probability is below min-p × the top token's probability, so "
        "the cut follows the model's confidence. 0 = off.")),
    SliderSpec("repetition_penalty", "Rep. penalty", 1.0, 2.0, decimals=2, special_text="off", tooltip=(
        "Repetition penalty: makes tokens that already appeared (in the prompt or the output) less "
        "likely; their logit is divided by this value (multiplied if negative). 1 = off.")),
)


class DecoderColumn(QFrame):
    settings_changed = Signal()  # any knob moved (also while dragging)
    settings_released = Signal()  # a drag or edit finished, or a preset was picked
    remove_requested = Signal()
    step_selected = Signal(int)  # a token of this column was hovered or clicked
    message = Signal(str)  # a line for the status bar

    def __init__(self, index: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("decoderColumn")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.presets = builtin_presets()
        self.index = index

        self.title = Swatch(COLUMN_COLOURS[0], shape="dot")
        font = self.title.text.font()
        font.setBold(True)
        self.title.text.setFont(font)
        self.preset_box = QComboBox()
        self.preset_box.addItems([*self.presets, CUSTOM])
        self.preset_box.setToolTip("Presets: Greedy (always the top token), Balanced (a little randomness "
                                   "among likely tokens), Creative (hotter, wide nucleus). Moving a slider "
                                   "makes it Custom.")
        self.menu_button = QToolButton()
        self.menu_button.setText("⋯")
        self.menu_button.setToolTip("Copy output, save or load this column's settings as a preset (JSON)")
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.menu_button)
        self.copy_action = menu.addAction("Copy output", self.copy_output)
        menu.addSeparator()
        menu.addAction("Save preset…", self.save_preset)
        menu.addAction("Load preset…", self.load_preset)
        self.menu_button.setMenu(menu)
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip("Remove this decoder column")
        self.remove_button.clicked.connect(self.remove_requested)

        header = QHBoxLayout()
        header.setSpacing(6)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.preset_box)
        header.addWidget(self.menu_button)
        header.addWidget(self.remove_button)

        self.rows: dict[str, SliderRow] = {}
        self.knobs = QGridLayout()
        self.knobs.setHorizontalSpacing(6)
        self.knobs.setVerticalSpacing(2)
        for spec in SLIDERS:
            row = SliderRow(spec, self)
            row.valueChanged.connect(self._on_knob)
            row.released.connect(self.settings_released)
            self.rows[spec.key] = row
        self._per_row = 0
        self._place_knobs(1)
        # Set when a model's vocabulary lowered this column's top-k: (wanted, given); cleared by the user.
        self.clamped_top_k: tuple[int, int] | None = None
        self.stale = False

        self.info = QLabel(" ")
        self.info.setWordWrap(True)
        self.output = TokenView()
        self.output.setMinimumHeight(self.output.fontMetrics().lineSpacing() * 3 + 12)
        # Hovering selects a step once the mouse rests on a token, so sweeping across the text does not
        # recompute the distribution for every token passed over; a click selects at once.
        self._hovered_step = -1
        self._hover_timer = QTimer(self)
        self._hover_timer.setSingleShot(True)
        self._hover_timer.setInterval(HOVER_MS)
        self._hover_timer.timeout.connect(self._on_hover_rest)
        self.output.step_hovered.connect(self._on_hover)
        self.output.step_clicked.connect(self.step_selected)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addLayout(self.knobs)
        layout.addWidget(self.output, 1)
        layout.addWidget(self.info)
        self.preset_box.currentTextChanged.connect(self._on_preset)
        self.set_index(index)

    # identity --------------------------------------------------------------------------------

    @property
    def colour(self) -> str:
        return COLUMN_COLOURS[self.index % len(COLUMN_COLOURS)]

    @property
    def name(self) -> str:
        return f"Decoder {self.index + 1}"

    def set_index(self, index: int) -> None:
        self.index = index
        self.title.set_colour(self.colour)
        self.title.setText(self.name)
        self.setStyleSheet(f"QFrame#decoderColumn {{ border-top: 3px solid {self.colour}; }}")

    # layout ----------------------------------------------------------------------------------

    def _place_knobs(self, per_row: int) -> None:
        """The five sliders one or two to a row: two when the column is wide, so the output gets the height."""
        if per_row == self._per_row:
            return
        self._per_row = per_row
        for row in self.rows.values():
            for w in row.widgets:
                self.knobs.removeWidget(w)
        for i in range(self.knobs.columnCount()):
            self.knobs.setColumnStretch(i, 0)
        for i, row in enumerate(self.rows.values()):
            row.place(self.knobs, i // per_row, 3 * (i % per_row))
        for k in range(per_row):
            self.knobs.setColumnStretch(3 * k + 1, 1)  # the sliders take the spare width

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_knobs(2 if event.size().width() >= TWO_PER_ROW_WIDTH else 1)

    # state shown -----------------------------------------------------------------------------

    def set_stale(self, stale: bool) -> None:
        """Say that the settings (or the prompt) changed since the output was made."""
        if stale == self.stale:
            return
        self.stale = stale
        self.output.set_stale(stale)
        if stale:
            self.info.setText("Settings changed since this text was generated: Generate (Ctrl+Enter) to update")
            set_tone(self.info, "warning")
        else:
            set_tone(self.info, None)

    def set_info(self, text: str) -> None:
        self.set_stale(False)
        self.info.setText(text)

    # settings --------------------------------------------------------------------------------

    def settings(self) -> SamplingSettings:
        v = {key: row.value() for key, row in self.rows.items()}
        return SamplingSettings(temperature=v["temperature"], top_k=int(v["top_k"]), top_p=v["top_p"],
                                min_p=v["min_p"], repetition_penalty=v["repetition_penalty"])

    def set_settings(self, settings: SamplingSettings, *, name: str | None = None) -> None:
        """Move every slider (no signal per slider), pick the matching preset, then tell the tab once."""
        for key, value in settings.to_dict().items():
            self.rows[key].setValue(value)
        if name and name not in self.presets and name != CUSTOM:
            self.presets[name] = settings
            self.preset_box.blockSignals(True)
            self.preset_box.insertItem(self.preset_box.count() - 1, name)
            self.preset_box.blockSignals(False)
        self._sync_preset_box()
        self.settings_changed.emit()

    def apply_preset(self, name: str) -> None:
        """Pick a preset by name, as if chosen from the list."""
        if name in self.presets:
            self.set_settings(self.presets[name])

    def set_vocab_size(self, vocab_size: int) -> None:
        """Top-k reaches the vocabulary; a column on a preset keeps it (its k clamped to the vocabulary).
        A k lowered to fit is remembered in `clamped_top_k`, so the tab can say so."""
        preset = self.preset_box.currentText()
        wanted = self.presets[preset].top_k if preset in self.presets else int(self.rows["top_k"].value())
        if self.clamped_top_k is not None:
            wanted = max(wanted, self.clamped_top_k[0])
        self.rows["top_k"].setMaximum(max(1, vocab_size))
        self.rows["top_k"].setValue(wanted)
        given = int(self.rows["top_k"].value())
        self.clamped_top_k = (wanted, given) if given < wanted else None
        self._sync_preset_box()

    @Slot(str)
    def _on_preset(self, name: str) -> None:
        if name in self.presets:
            self.set_settings(self.presets[name])
            self.settings_released.emit()

    @Slot(float)
    def _on_knob(self, _value: float) -> None:
        if self.sender() is self.rows["top_k"]:
            self.clamped_top_k = None  # the person chose a k of their own
        self._sync_preset_box()
        self.settings_changed.emit()

    def _sync_preset_box(self) -> None:
        self.preset_box.blockSignals(True)
        top_k_max = int(self.rows["top_k"].maximum())
        self.preset_box.setCurrentText(match_preset(self.settings(), self.presets, top_k_max))
        self.preset_box.blockSignals(False)

    # output ----------------------------------------------------------------------------------

    @Slot(int)
    def _on_hover(self, step: int) -> None:
        if step != self._hovered_step:
            self._hovered_step = step
            self._hover_timer.start()

    @Slot()
    def _on_hover_rest(self) -> None:
        self.step_selected.emit(self._hovered_step)

    def start_output(self, prompt: str) -> None:
        self.output.start(prompt)
        self.set_info("waiting for the first token…")

    @Slot()
    def copy_output(self) -> None:
        text = self.output.generated_text()
        QGuiApplication.clipboard().setText(text)
        self.message.emit(f"Copied {len(text):,} characters of {self.name}'s output" if text
                          else f"{self.name} has no output to copy yet")

    @Slot()
    def save_preset(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save sampling preset", "sampling-preset.json",
                                              "Sampling preset (*.json)")
        if not path:
            return
        name = self.preset_box.currentText()
        try:
            save_preset_file(path, name if name != CUSTOM else "Custom", self.settings())
        except Exception as e:  # a full disk, a folder gone: a message, and the settings stay as they are
            QMessageBox.warning(self, "Could not save preset", f"{path}: {getattr(e, 'strerror', None) or e}")
            return
        self.message.emit(f"Saved {self.name}'s settings to {path}")

    @Slot()
    def load_preset(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load sampling preset", "", "Sampling preset (*.json)")
        if not path:
            return
        try:
            name, settings = load_preset_file(path)
            top_k_max = self.rows["top_k"].maximum()
            if settings.top_k > top_k_max:
                raise ValueError(f"top_k {settings.top_k:,} is larger than the vocabulary ({int(top_k_max):,})")
        except (ValueError, OSError) as e:
            QMessageBox.warning(self, "Could not load preset", str(e))
            return
        self.set_settings(settings, name=name)
        self.settings_released.emit()
        self.message.emit(f"Loaded preset “{name}” into {self.name}")
