"""A column's output text, streamed token by token, optionally coloured by each token's probability.

The view remembers where each token starts in the document, so the character under the mouse
(an exact hit test, not the nearest position) tells the tab which step to show in the distribution
view. Formats are shared per colour bucket and a batch of tokens is one edit block: streaming costs
a few microseconds per token on the GUI thread. The prompt is shown first, greyed, so the
continuation reads in context.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QLinearGradient,
    QMouseEvent,
    QPainter,
    QPalette,
    QTextCharFormat,
    QTextCursor,
    QTextOption,
)
from PySide6.QtWidgets import QSizePolicy, QTextEdit, QToolTip, QWidget

PROMPT_SHOWN_CHARS = 400  # a long prompt is shown by its last characters
COLOUR_BUCKETS = 32  # probabilities are coloured in this many steps (one shared format each)

# Probability colour ramp (low -> high). Pastels, so dark text stays readable on them in any theme.
RAMP = ((0.0, QColor("#f28b82")), (0.35, QColor("#fbbc6a")), (0.65, QColor("#fff08a")), (1.0, QColor("#a8dab5")))
SELECTED_BG = QColor("#1558b0")  # white on it: 6.9:1
SELECTED_FG = QColor("#ffffff")
INK = QColor("#202124")


def probability_colour(p: float) -> QColor:
    """Colour for a token probability in [0, 1], interpolated along RAMP."""
    p = min(max(float(p), 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(RAMP, RAMP[1:]):
        if p <= x1:
            t = (p - x0) / (x1 - x0)
            return QColor.fromRgbF(c0.redF() + t * (c1.redF() - c0.redF()),
                                   c0.greenF() + t * (c1.greenF() - c0.greenF()),
                                   c0.blueF() + t * (c1.blueF() - c0.blueF()))
    return QColor(RAMP[-1][1])


@dataclass
class _Token:
    step: int
    start: int  # document positions (UTF-16 units, as Qt counts them)
    end: int
    prob: float


class TokenView(QTextEdit):
    """Read-only streaming text; `step_hovered` / `step_clicked` carry the step under the mouse."""

    step_hovered = Signal(int)
    step_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setLineWrapMode(QTextEdit.LineWrapMode.WidgetWidth)
        # Generated text can hold long runs without spaces: wrap them anywhere. Qt never wraps a line
        # made only of spaces (they hang past the edge), so no horizontal scroll bar for them either.
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        font = QFont("DejaVu Sans Mono")
        font.setStyleHint(QFont.StyleHint.Monospace)
        font.setPointSizeF(max(self.font().pointSizeF(), 10.0))
        self.document().setDefaultFont(font)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setPlaceholderText("Generated text appears here, token by token.")
        self._tokens: list[_Token] = []
        self._starts: list[int] = []  # document position of each token, ascending
        self._by_step: dict[int, int] = {}
        self._texts: list[str] = []
        self._colour = True
        self._selected: int | None = None  # index into _tokens
        self._formats: dict[int, QTextCharFormat] = {}
        self._prompt_chars = 0  # the greyed prompt shown before the tokens
        self.setProperty("stale", False)

    # content -------------------------------------------------------------------------------

    def start(self, prompt: str) -> None:
        """Clear and show the prompt (greyed) before the first token arrives."""
        self.clear()
        self._tokens, self._starts, self._by_step, self._texts, self._selected = [], [], {}, [], None
        shown = prompt if len(prompt) <= PROMPT_SHOWN_CHARS else "…" + prompt[-PROMPT_SHOWN_CHARS:]
        self._prompt_chars = 0
        if shown:
            cursor = QTextCursor(self.document())
            cursor.insertText(shown, self._prompt_format())
            self._prompt_chars = cursor.position()

    def _prompt_format(self) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setForeground(self.palette().color(QPalette.ColorRole.PlaceholderText))
        return fmt

    def set_stale(self, stale: bool) -> None:
        """Outline the text as out of date (the style sheet draws it: TokenView[stale="true"])."""
        self.setProperty("stale", stale)
        self.style().unpolish(self)
        self.style().polish(self)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange and hasattr(self, "_prompt_chars"):
            # The theme changed: the prompt's grey and uncoloured tokens take the new palette's colours.
            if self._prompt_chars:
                cursor = QTextCursor(self.document())
                cursor.setPosition(0)
                cursor.setPosition(self._prompt_chars, QTextCursor.MoveMode.KeepAnchor)
                cursor.setCharFormat(self._prompt_format())
            self.set_colour_by_probability(self._colour)

    def append_tokens(self, tokens: list[tuple[int, str, float]]) -> None:
        """Append (step, text, probability) tokens; keeps following the end unless scrolled up."""
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()  # one layout pass for the whole batch
        for step, text, prob in tokens:
            start = cursor.position()
            cursor.insertText(text, self._format(prob, selected=False))
            self._by_step[step] = len(self._tokens)
            self._tokens.append(_Token(step, start, cursor.position(), prob))
            self._starts.append(start)
            self._texts.append(text)
        cursor.endEditBlock()
        if follow:
            bar.setValue(bar.maximum())

    def generated_text(self) -> str:
        return "".join(self._texts)

    def token_count(self) -> int:
        return len(self._tokens)

    # colouring and selection ---------------------------------------------------------------

    def set_colour_by_probability(self, on: bool) -> None:
        self._colour = on
        self._formats.clear()
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        for i in range(len(self._tokens)):
            self._restyle(i, cursor)
        cursor.endEditBlock()

    def select_step(self, step: int | None) -> None:
        """Highlight the token of that step (None clears)."""
        previous, self._selected = self._selected, self._index_of_step(step)
        if previous is not None and previous < len(self._tokens):
            self._restyle(previous)
        if self._selected is not None:
            self._restyle(self._selected)

    def _index_of_step(self, step: int | None) -> int | None:
        return None if step is None else self._by_step.get(step)

    def _restyle(self, i: int, cursor: QTextCursor | None = None) -> None:
        token = self._tokens[i]
        cursor = cursor or QTextCursor(self.document())
        cursor.setPosition(token.start)
        cursor.setPosition(token.end, QTextCursor.MoveMode.KeepAnchor)
        cursor.setCharFormat(self._format(token.prob, selected=i == self._selected))

    def _format(self, prob: float, *, selected: bool) -> QTextCharFormat:
        """The shared format of a colour bucket (-1: selected, -2: uncoloured)."""
        key = -1 if selected else round(min(max(prob, 0.0), 1.0) * COLOUR_BUCKETS) if self._colour else -2
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = QTextCharFormat()
            if selected:
                fmt.setBackground(SELECTED_BG)
                fmt.setForeground(SELECTED_FG)
            elif self._colour:
                fmt.setBackground(probability_colour(key / COLOUR_BUCKETS))
                fmt.setForeground(INK)
            else:
                fmt.setForeground(self.palette().color(QPalette.ColorRole.Text))
            self._formats[key] = fmt
        return fmt

    # mouse ---------------------------------------------------------------------------------

    def step_at(self, pos: QPoint) -> int | None:
        """The step of the token under a viewport point (None over the prompt or empty space)."""
        if not self._tokens:
            return None
        offset = QPointF(self.horizontalScrollBar().value(), self.verticalScrollBar().value())
        position = self.document().documentLayout().hitTest(QPointF(pos) + offset, Qt.HitTestAccuracy.ExactHit)
        if position < self._starts[0]:
            return None
        i = bisect.bisect_right(self._starts, position) - 1
        token = self._tokens[i]
        return token.step if token.start <= position < token.end else None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        step = self.step_at(event.position().toPoint())
        if step is not None:
            token = self._tokens[self._by_step[step]]
            QToolTip.showText(event.globalPosition().toPoint(), f"step {step + 1} · p = {token.prob:.3f}", self)
            self.step_hovered.emit(step)
        else:
            QToolTip.hideText()
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        step = self.step_at(event.position().toPoint())
        if step is not None and not self.textCursor().hasSelection():
            self.step_clicked.emit(step)
        super().mouseReleaseEvent(event)

    def token_rect(self, step: int) -> QRectF | None:
        """Viewport rectangle of a step's token (tests click it)."""
        i = self._index_of_step(step)
        if i is None:
            return None
        cursor = QTextCursor(self.document())
        cursor.setPosition(self._tokens[i].start)
        left = self.cursorRect(cursor)
        cursor.setPosition(self._tokens[i].end)
        right = self.cursorRect(cursor)
        width = right.left() - left.left() if right.top() == left.top() else 6
        return QRectF(left.left(), left.top(), max(width, 2), left.height())


class ProbabilityLegend(QWidget):
    """A small gradient bar explaining token colours: low … high probability."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFixedSize(150, 22)
        self.setToolTip("Token colour = the probability the decoder gave the token it chose "
                        "(after its filters): red = unlikely, green = very likely.")

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        bar = QRectF(26, 5, self.width() - 52, 12)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        for x, colour in RAMP:
            gradient.setColorAt(x, colour)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(gradient)
        painter.drawRoundedRect(bar, 3, 3)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        painter.drawText(QRectF(0, 0, 24, self.height()), Qt.AlignmentFlag.AlignCenter, "p 0")
        painter.drawText(QRectF(self.width() - 24, 0, 24, self.height()), Qt.AlignmentFlag.AlignCenter, "1")
