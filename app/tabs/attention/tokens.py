"""The text tinted by attention: pick a query token, see how much it draws from each earlier token.

The tint of each token is its weight in the query's row, scaled so the row's largest weight is
fully coloured (small weights would otherwise be invisible); the hover tooltip gives the exact
weight; the text on each tint is black or white, whichever reads better on it. Tokens after the query
are in the muted text colour: a causal model never sees them.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget

from app import theme
from app.widgets.token_text import display_piece, span_under

TINT = QColor(230, 81, 0)  # orange, the colour used for "selected" across the tab
QUERY_BG = QColor("#1565C0")
TINT_SHADES = 40  # weights are tinted in this many steps


class AttentionTextView(QTextEdit):
    """Read-only text made of token pieces; click a token to make it the query."""

    query_picked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(QFont("monospace"))
        self.viewport().installEventFilter(self)
        self.pieces: list[str] = []
        self.query = -1
        self.row: np.ndarray | None = None
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._render_timer = QTimer(self, singleShot=True, interval=0)
        self._render_timer.timeout.connect(self._render)

    def set_tokens(self, pieces: list[str]) -> None:
        """New text. Drawn at the next turn of the event loop unless a query comes first (it usually
        does, at once: drawing 1,000 tokens twice would hold the window for nothing)."""
        self.pieces = list(pieces)
        self.query, self.row = -1, None
        self._render_timer.start()

    def set_query(self, query: int, row: np.ndarray | None) -> None:
        """Tint by `row` (the query's attention weights over keys)."""
        moved = query != self.query
        self.query = query
        self.row = None if row is None else np.asarray(row, dtype=np.float32)
        self._render()
        if moved and 0 <= query < len(self._starts):  # bring a new query into view
            cursor = QTextCursor(self.document())
            cursor.setPosition(self._starts[query])
            self.setTextCursor(cursor)
            self.ensureCursorVisible()

    def weights_shown(self) -> dict[int, float]:
        """Token index -> weight for the tokens currently tinted (for tests and tooltips)."""
        if self.row is None or self.query < 0:
            return {}
        return {k: float(self.row[k]) for k in range(min(self.query + 1, len(self.row)))}

    @Slot()
    def _render(self) -> None:
        self._render_timer.stop()
        scroll = self.verticalScrollBar().value()
        self.clear()
        self._starts, self._ends = [], []
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        top = float(self.row[: self.query + 1].max()) if self.row is not None and self.query >= 0 else 0.0
        base = self.palette().color(QPalette.ColorRole.Base)
        plain = QTextCharFormat()
        query_fmt = QTextCharFormat()
        query_fmt.setBackground(QUERY_BG)
        query_fmt.setForeground(QColor("white"))
        query_fmt.setFontWeight(QFont.Weight.Bold)
        future = QTextCharFormat()
        future.setForeground(theme.muted_color())
        tints: dict[int, QTextCharFormat] = {}  # one shared format per shade
        for k, piece in enumerate(self.pieces):
            fmt = plain
            if self.query >= 0 and k == self.query:
                fmt = query_fmt
            elif self.query >= 0 and k > self.query:
                fmt = future
            elif self.row is not None and self.query >= 0 and top > 0:
                shade = round(TINT_SHADES * min(1.0, float(self.row[k]) / top))
                fmt = tints.get(shade)
                if fmt is None:
                    tint = theme.mix(TINT, base, shade / TINT_SHADES)  # opaque, so the ink can match it
                    fmt = tints[shade] = QTextCharFormat()
                    fmt.setBackground(tint)
                    fmt.setForeground(theme.ink_for(tint))
            self._starts.append(cursor.position())
            cursor.insertText(display_piece(piece), fmt)
            self._ends.append(cursor.position())
        cursor.endEditBlock()
        self.verticalScrollBar().setValue(scroll)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "pieces"):
            self._render()  # tints are mixed with the theme's background

    def token_at(self, pos) -> int:
        """The token under a viewport point, or -1."""
        return span_under(self, self._starts, self._ends, pos)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.viewport():
            if event.type() == QEvent.Type.MouseButtonRelease and not self.textCursor().hasSelection():
                k = self.token_at(event.position().toPoint())
                if k >= 0:
                    self.query_picked.emit(k)
            elif event.type() == QEvent.Type.ToolTip:
                k = self.token_at(event.pos())
                if k >= 0:
                    QToolTip.showText(event.globalPos(), self._tooltip(k), self)
                else:
                    QToolTip.hideText()
                return True
        return super().eventFilter(obj, event)

    def _tooltip(self, k: int) -> str:
        text = f"token {k} {self.pieces[k]!r}"
        if self.query < 0 or self.row is None:
            return text + " — click to see what it attends to"
        if k == self.query:
            return text + " — the query"
        if k > self.query:
            return text + " — after the query: never attended to"
        return f"{text}: weight {float(self.row[k]):.4f} from query {self.query} {self.pieces[self.query]!r}"
