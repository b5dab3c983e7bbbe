"""The text tinted by attention: pick a query token, see how much it draws from each earlier token.

The tint of each token is its weight in the query's row, scaled so the row's largest weight is
fully coloured (small weights would otherwise be invisible); the hover tooltip gives the exact
weight. Tokens after the query are greyed: a causal model never sees them.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget

from app.widgets.token_text import display_piece, span_under

TINT = (230, 81, 0)  # orange, the colour used for "selected" across the tab
QUERY_BG = QColor("#1565C0")
FUTURE_FG = QColor("#9e9e9e")


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

    def set_tokens(self, pieces: list[str]) -> None:
        self.pieces = list(pieces)
        self.query, self.row = -1, None
        self._render()

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

    def _render(self) -> None:
        scroll = self.verticalScrollBar().value()
        self.clear()
        self._starts, self._ends = [], []
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        top = float(self.row[: self.query + 1].max()) if self.row is not None and self.query >= 0 else 0.0
        for k, piece in enumerate(self.pieces):
            fmt = QTextCharFormat()
            if self.query >= 0 and k == self.query:
                fmt.setBackground(QUERY_BG)
                fmt.setForeground(QColor("white"))
                fmt.setFontWeight(QFont.Weight.Bold)
            elif self.query >= 0 and k > self.query:
                fmt.setForeground(FUTURE_FG)
            elif self.row is not None and self.query >= 0 and top > 0:
                alpha = int(round(255 * min(1.0, float(self.row[k]) / top)))
                fmt.setBackground(QColor(*TINT, alpha))
            self._starts.append(cursor.position())
            cursor.insertText(display_piece(piece), fmt)
            self._ends.append(cursor.position())
        cursor.endEditBlock()
        self.verticalScrollBar().setValue(scroll)

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
