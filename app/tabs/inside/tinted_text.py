"""Text made of token pieces, each tinted by a number (loss, attribution, loss change), with a tooltip each.

The tint is an accent colour blended into the palette's base colour in proportion to the value (signed values
use a second colour for negatives), and each token's text colour is picked for contrast with its blended
background, so the view reads in light and dark themes alike.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget

from app.theme import RUN_COLORS, mono_font
from app.widgets.token_text import display_piece, span_under

POSITIVE = QColor(RUN_COLORS[5])  # vermillion: more loss, more attribution
NEGATIVE = QColor(RUN_COLORS[0])  # blue: less loss, negative attribution
MAX_ALPHA = 0.85


def blend(base: QColor, tint: QColor, amount: float) -> QColor:
    """`tint` laid over `base` with opacity amount (0..1)."""
    a = max(0.0, min(1.0, amount))
    return QColor.fromRgbF(base.redF() + (tint.redF() - base.redF()) * a,
                           base.greenF() + (tint.greenF() - base.greenF()) * a,
                           base.blueF() + (tint.blueF() - base.blueF()) * a)


def readable_on(background: QColor) -> QColor:
    """Black or white, whichever reads better on this background."""
    r, g, b = background.redF(), background.greenF(), background.blueF()
    return QColor("black") if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else QColor("white")


def tint_colours(palette: QPalette, value: float, scale: float, tint: QColor = POSITIVE,
                 negative: QColor = NEGATIVE) -> tuple[QColor, QColor]:
    """(background, text) for a value on a scale: |value| / scale of the accent, sign picks the accent."""
    base = palette.color(QPalette.ColorRole.Base)
    if not np.isfinite(value) or scale <= 0:
        return base, palette.color(QPalette.ColorRole.Text)
    background = blend(base, tint if value >= 0 else negative, MAX_ALPHA * min(1.0, abs(value) / scale))
    return background, readable_on(background)


class TintedTokenText(QTextEdit):
    """Read-only tinted tokens; click one to pick it (token_clicked), hover for its tooltip."""

    token_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(mono_font())
        self.viewport().installEventFilter(self)
        self.pieces: list[str] = []
        self.values: np.ndarray = np.zeros(0, dtype=np.float32)
        self.tooltips: list[str] = []
        self.scale = 1.0
        self.selected = -1
        self.shown_until = -1  # tokens after this one are greyed (-1: none)
        self._starts: list[int] = []
        self._ends: list[int] = []

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
        self._render()

    def clear_tokens(self, message: str = "") -> None:
        self.pieces, self.tooltips, self.values = [], [], np.zeros(0, np.float32)
        self._starts, self._ends = [], []
        self.setPlainText(message)

    def _render(self) -> None:
        scroll = self.verticalScrollBar().value()
        self.clear()
        self._starts, self._ends = [], []
        palette = self.palette()
        muted = palette.color(QPalette.ColorRole.PlaceholderText)
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        for k, piece in enumerate(self.pieces):
            fmt = QTextCharFormat()
            if 0 <= self.shown_until < k:
                fmt.setForeground(muted)
            else:
                background, text = tint_colours(palette, float(self.values[k]), self.scale)
                fmt.setBackground(background)
                fmt.setForeground(text)
            if k == self.selected:
                fmt.setFontUnderline(True)
                fmt.setFontWeight(QFont.Weight.Bold)
            self._starts.append(cursor.position())
            cursor.insertText(display_piece(piece), fmt)
            self._ends.append(cursor.position())
        cursor.endEditBlock()
        self.verticalScrollBar().setValue(scroll)

    def token_at(self, pos) -> int:
        return span_under(self, self._starts, self._ends, pos)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.pieces:
            self._render()  # the theme changed: blend again over the new base colour

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.viewport():
            if event.type() == QEvent.Type.MouseButtonRelease and not self.textCursor().hasSelection():
                k = self.token_at(event.position().toPoint())
                if k >= 0:
                    self.token_clicked.emit(k)
            elif event.type() == QEvent.Type.ToolTip:
                k = self.token_at(event.pos())
                if 0 <= k < len(self.tooltips) and self.tooltips[k]:
                    QToolTip.showText(event.globalPos(), self.tooltips[k], self)
                else:
                    QToolTip.hideText()
                return True
        return super().eventFilter(obj, event)
