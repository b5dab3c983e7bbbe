"""The text tinted by attention: pick a query token, see how much it draws from each earlier token.

The tint of each token is its weight in the query's row, scaled so the row's largest weight is
fully coloured (small weights would otherwise be invisible); the hover tooltip gives the exact
weight; the text on each tint is black or white, whichever reads better on it. Tokens after the query
are in the muted text colour: a causal model never sees them.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QTimer, Slot
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QWidget

from app import theme
from app.widgets.token_text import TokenTextView

TINT = QColor(230, 81, 0)  # orange, the colour used for "selected" across the tab
QUERY_BG = QColor("#1565C0")
TINT_SHADES = 40  # weights are tinted in this many steps


class AttentionTextView(TokenTextView):
    """Read-only text made of token pieces; click a token to make it the query (token_clicked)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFont(QFont("monospace"))
        self.query = -1
        self.row: np.ndarray | None = None
        self._formats: dict[object, QTextCharFormat] = {}
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
        query_fmt = QTextCharFormat()
        query_fmt.setBackground(QUERY_BG)
        query_fmt.setForeground(QColor("white"))
        query_fmt.setFontWeight(QFont.Weight.Bold)
        future = QTextCharFormat()
        future.setForeground(theme.muted_color())
        # One shared format per shade; the query's and the future tokens' under their own keys.
        self._formats = {"plain": QTextCharFormat(), "query": query_fmt, "future": future}
        self._top = float(self.row[: self.query + 1].max()) if self.row is not None and self.query >= 0 else 0.0
        self._base = self.palette().color(QPalette.ColorRole.Base)
        self.render_tokens()

    def token_format(self, k: int) -> QTextCharFormat:
        if self.query >= 0 and k == self.query:
            return self._formats["query"]
        if self.query >= 0 and k > self.query:
            return self._formats["future"]
        if self.row is None or self.query < 0 or self._top <= 0:
            return self._formats["plain"]
        shade = round(TINT_SHADES * min(1.0, float(self.row[k]) / self._top))
        fmt = self._formats.get(shade)
        if fmt is None:
            tint = theme.mix(TINT, self._base, shade / TINT_SHADES)  # opaque, so the ink can match it
            fmt = self._formats[shade] = QTextCharFormat()
            fmt.setBackground(tint)
            fmt.setForeground(theme.ink_for(tint))
        return fmt

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "_render_timer"):
            self._render()  # tints are mixed with the theme's background

    def token_tooltip(self, k: int) -> str:
        text = f"token {k} {self.pieces[k]!r}"
        if self.query < 0 or self.row is None:
            return text + " — click to see what it attends to"
        if k == self.query:
            return text + " — the query"
        if k > self.query:
            return text + " — after the query: never attended to"
        return f"{text}: weight {float(self.row[k]):.4f} from query {self.query} {self.pieces[self.query]!r}"
