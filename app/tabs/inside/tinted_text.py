"""Text made of token pieces, each tinted by a number (loss, attribution, loss change), with a tooltip each.

The tint is an accent colour blended into the palette's base colour in proportion to the value (signed values
use a second colour for negatives), and each token's text colour is black or white, whichever contrasts more
with its blended background (theme.ink_for, as in the Attention tab), so the view reads in light and dark
themes alike.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat
from PySide6.QtWidgets import QWidget

from app.theme import RUN_COLORS, ink_for, mix, mono_font
from app.widgets.token_text import TokenTextView

POSITIVE = QColor(RUN_COLORS[5])  # vermillion: more loss, more attribution
NEGATIVE = QColor(RUN_COLORS[0])  # blue: less loss, negative attribution
MAX_ALPHA = 0.85


def tint_colours(palette: QPalette, value: float, scale: float, tint: QColor = POSITIVE,
                 negative: QColor = NEGATIVE) -> tuple[QColor, QColor]:
    """(background, text) for a value on a scale: |value| / scale of the accent, sign picks the accent."""
    base = palette.color(QPalette.ColorRole.Base)
    if not np.isfinite(value) or scale <= 0:
        return base, palette.color(QPalette.ColorRole.Text)
    background = mix(tint if value >= 0 else negative, base, MAX_ALPHA * min(1.0, abs(value) / scale))
    return background, ink_for(background)


class TintedTokenText(TokenTextView):
    """Read-only tinted tokens; click one to pick it (token_clicked), hover for its tooltip."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFont(mono_font())
        self.values: np.ndarray = np.zeros(0, dtype=np.float32)
        self.tooltips: list[str] = []
        self.scale = 1.0
        self.selected = -1
        self.shown_until = -1  # tokens after this one are greyed (-1: none)

    def set_tokens(self, pieces: list[str], values: np.ndarray | None = None, tooltips: list[str] | None = None,
                   *, scale: float | None = None, selected: int = -1, shown_until: int = -1) -> None:
        """Tint token k by values[k] / scale (NaN: no tint). scale None: the largest |value|."""
        self.pieces = list(pieces)
        self.values = np.zeros(len(pieces), np.float32) if values is None else np.asarray(values, np.float32)
        self.tooltips = list(tooltips) if tooltips is not None else [""] * len(pieces)
        finite = np.abs(self.values[np.isfinite(self.values)])
        self.scale = float(scale) if scale is not None else (float(finite.max()) if finite.size else 1.0)
        self.selected = selected
        self.shown_until = shown_until
        self.render_tokens()

    def clear_tokens(self, message: str = "") -> None:
        self.pieces, self.tooltips, self.values = [], [], np.zeros(0, np.float32)
        self._starts, self._ends = [], []
        self.setPlainText(message)

    def token_format(self, k: int) -> QTextCharFormat:
        palette = self.palette()
        fmt = QTextCharFormat()
        if 0 <= self.shown_until < k:
            fmt.setForeground(palette.color(QPalette.ColorRole.PlaceholderText))
        else:
            background, text = tint_colours(palette, float(self.values[k]), self.scale)
            fmt.setBackground(background)
            fmt.setForeground(text)
        if k == self.selected:
            fmt.setFontUnderline(True)
            fmt.setFontWeight(QFont.Weight.Bold)
        return fmt

    def token_tooltip(self, k: int) -> str:
        return self.tooltips[k] if k < len(self.tooltips) else ""

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.pieces:
            self.render_tokens()  # the theme changed: blend again over the new base colour
