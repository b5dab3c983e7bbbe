"""Helpers for text views made of token spans (the Attention and Inside tabs' tinted text, the Tokenizer tab's
spans)."""
from __future__ import annotations

import bisect

from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget


def span_under(edit: QTextEdit, starts: list[int], ends: list[int], pos) -> int:
    """Index of the [start, end) document range under a viewport point, or -1."""
    cursor = edit.cursorForPosition(pos)
    doc_pos = cursor.position()
    # cursorForPosition gives the nearest gap between characters: the character is on the left
    # of that gap if the pointer is left of it.
    if pos.x() < edit.cursorRect(cursor).x():
        doc_pos -= 1
    i = bisect.bisect_right(starts, doc_pos) - 1
    return i if 0 <= i < len(ends) and doc_pos < ends[i] else -1


def display_piece(piece: str) -> str:
    # A newline token would be invisible and untintable: show a mark, then break the line.
    return piece.replace("\n", "\u21b5\n") if piece else "\u2205"


def text_of_rendered(label: str) -> str:
    """The text of a token from its render_token string (recorded probes keep only those): render_token
    escapes newlines and tabs so a label stays on one line; the tinted text needs them back."""
    return label.replace("\\n", "\n").replace("\\t", "\t")


class TokenTextView(QTextEdit):
    """Read-only text made of token pieces, each in its own format: click a token to pick it (token_clicked),
    hover for its tooltip. Subclasses say how token k looks (`token_format`) and what its tooltip says
    (`token_tooltip`; "" for none), and call `render_tokens` when either changes."""

    token_clicked = Signal(int)  # token index

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.viewport().installEventFilter(self)
        self.pieces: list[str] = []
        self._starts: list[int] = []
        self._ends: list[int] = []

    def token_format(self, k: int) -> QTextCharFormat:
        return QTextCharFormat()

    def token_tooltip(self, k: int) -> str:
        return ""

    def render_tokens(self) -> None:
        """Lay out every piece again in its format, keeping the scroll position."""
        scroll = self.verticalScrollBar().value()
        self.clear()
        self._starts, self._ends = [], []
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        for k, piece in enumerate(self.pieces):
            self._starts.append(cursor.position())
            cursor.insertText(display_piece(piece), self.token_format(k))
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
                    self.token_clicked.emit(k)
            elif event.type() == QEvent.Type.ToolTip:
                k = self.token_at(event.pos())
                tip = self.token_tooltip(k) if 0 <= k < len(self.pieces) else ""
                if tip:
                    QToolTip.showText(event.globalPos(), tip, self)
                else:
                    QToolTip.hideText()
                return True
        return super().eventFilter(obj, event)
