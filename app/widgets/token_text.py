"""Helpers for text views made of token spans (the Attention tab's tinted text, the Tokenizer tab's spans)."""
from __future__ import annotations

import bisect

from PySide6.QtWidgets import QTextEdit


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
