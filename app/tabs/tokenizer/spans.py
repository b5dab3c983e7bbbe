"""One encoding of a text shown as coloured token spans, with its ids and counts.

The text comes cut into spans by tokenized.py (every span re-joins into exactly the text).
`EncodingPanel` shows one encoding: the spans (hover for id, bytes and string; whitespace can be
made visible), the ids (click one to highlight its span) and the counts.
"""
from __future__ import annotations

import html
import time

from PySide6.QtCore import QAbstractListModel, QEvent, QModelIndex, QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat, QTextCursor, QTextFormat, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QPlainTextEdit,
    QSizePolicy,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app import theme
from app.tabs.tokenizer.tokenized import TokenizedText
from app.widgets.token_text import span_under
from engine import render_bytes

# Pastel backgrounds that keep black text readable (the tiktokenizer look); cycled over tokens.
SPAN_COLOURS = ("#FFD6A5", "#CAFFBF", "#9BF6FF", "#BDB2FF", "#FFC6FF", "#FDFFB6", "#A0C4FF", "#FFADAD")
HIGHLIGHT = QColor("#B33F00")  # the selected token: white on it reads at 5.8:1
UNKNOWN_COLOUR = "#FF8A80"
MIN_VIEW_HEIGHT = 48
MAX_VIEW_HEIGHT = 320
MAX_SHOWN_TOKENS = 20_000  # spans past this are left out of the view (ids and counts still cover everything)
FILL_SLICE_S = 0.015  # GUI time per turn of the event loop for inserting spans, shared by every view
VISIBLE_WHITESPACE = {" ": "\u00b7", "\t": "\u2192", "\n": "\u21b5\n", "\r": "\u240d"}


def visible_whitespace(s: str) -> str:
    return "".join(VISIBLE_WHITESPACE.get(ch, ch) for ch in s)


class _Filler(QObject):
    """Inserts the spans of every filling view, one shared FILL_SLICE_S per turn of the event loop (three
    encodings of a pasted text fill together, not three times as slowly for the window)."""

    def __init__(self) -> None:
        super().__init__()
        self._views: list[TokenSpanView] = []
        self._timer: QTimer | None = None

    def add(self, view: TokenSpanView) -> None:
        if view not in self._views:
            self._views.append(view)
            view.destroyed.connect(self._forget)
        if self._timer is None:
            self._timer = QTimer(self, singleShot=True, interval=0)
            self._timer.timeout.connect(self._run)
        self._timer.start()

    def remove(self, view: TokenSpanView) -> None:
        if view in self._views:
            self._views.remove(view)

    @Slot(QObject)
    def _forget(self, view: QObject) -> None:
        self._views = [v for v in self._views if v is not view]

    @Slot()
    def _run(self) -> None:
        deadline = time.perf_counter() + FILL_SLICE_S
        while self._views and time.perf_counter() < deadline:
            view = self._views.pop(0)
            try:
                if not view._fill_some(deadline):
                    self._views.append(view)
            except RuntimeError:  # its widget was deleted meanwhile
                continue
        if self._views:
            self._timer.start()


_FILLER = _Filler()


class TokenSpanView(QPlainTextEdit):
    """Read-only text in coloured token spans; hover shows a token, click selects it.

    A plain-text view lays out only what is on screen, and a long text's spans are inserted a slice at
    a time (FILL_SLICE_S of work per turn of the event loop), so tens of thousands of spans never
    freeze the window; `filled` fires once every span is in.
    """

    token_clicked = Signal(int)  # token index
    token_hovered = Signal(int)  # token index, -1 when leaving
    filled = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setFont(QFont("monospace"))
        self.document().setDocumentMargin(4)
        self.viewport().setMouseTracking(True)
        self.viewport().installEventFilter(self)
        self._data: TokenizedText | None = None
        self._show_whitespace = False
        self._doc_starts: list[int] = []  # position in the document where each shown span starts
        self._doc_ends: list[int] = []
        self._next = 0  # the next span to insert
        self._hover = -1
        self._fit_height()

    def _fit_height(self) -> None:
        """As tall as the text (within limits): short texts make compact rows, long ones scroll. Only the
        blocks that fit MAX_VIEW_HEIGHT are laid out for it."""
        layout = self.document().documentLayout()
        height = 0.0
        block = self.document().begin()
        while block.isValid() and height < MAX_VIEW_HEIGHT:
            height += layout.blockBoundingRect(block).height()
            block = block.next()
        total = int(height) + 2 * int(self.document().documentMargin()) + 2 * self.frameWidth() + 2
        self.setFixedHeight(max(MIN_VIEW_HEIGHT, min(MAX_VIEW_HEIGHT, total)))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit_height()  # wrapping changed

    @property
    def data(self) -> TokenizedText | None:
        return self._data

    @property
    def filling(self) -> bool:
        return self._data is not None and self._next < min(len(self._data.spans), MAX_SHOWN_TOKENS)

    def set_tokenized(self, data: TokenizedText | None, show_whitespace: bool = False) -> None:
        self._data = data
        self._show_whitespace = show_whitespace
        self._doc_starts, self._doc_ends = [], []
        self._next = 0
        _FILLER.remove(self)
        self.clear()
        self.setExtraSelections([])
        if data is None:
            self._fit_height()
            return
        self._fill_slice()

    @Slot()
    def _fill_slice(self) -> None:
        """Insert spans until the shared slice of GUI time is used, then give the event loop its turn."""
        if self._data is not None and not self._fill_some(time.perf_counter() + FILL_SLICE_S):
            _FILLER.add(self)

    def _fill_some(self, deadline: float) -> bool:
        """Insert spans until `deadline` (perf_counter); True once every span is in."""
        data = self._data
        if data is None:
            return True
        end = min(len(data.spans), MAX_SHOWN_TOKENS)
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        fmt = QTextCharFormat()
        fmt.setForeground(QColor("black"))
        n = self._next
        while n < end:
            span = data.spans[n]
            piece = data.span_text(span)
            unknown = not data.exact and data.unknown and data.ids[span.tokens[0]] == 0
            fmt.setBackground(QColor(UNKNOWN_COLOUR if unknown else SPAN_COLOURS[n % len(SPAN_COLOURS)]))
            if self._show_whitespace:
                piece = visible_whitespace(piece)
            self._doc_starts.append(cursor.position())
            cursor.insertText(piece, fmt)
            self._doc_ends.append(cursor.position())
            n += 1
            if n % 16 == 0 and time.perf_counter() > deadline:
                break
        self._next = n
        if n >= end and len(data.spans) > MAX_SHOWN_TOKENS:
            fmt.setBackground(QColor("transparent"))
            fmt.setForeground(theme.muted_color())
            cursor.insertText(f"\n… {len(data.spans) - MAX_SHOWN_TOKENS:,} more spans not shown", fmt)
        cursor.endEditBlock()
        self._fit_height()
        if n < end:
            return False
        self.moveCursor(QTextCursor.MoveOperation.Start)
        self.filled.emit()
        return True

    def highlight_token(self, token_index: int) -> None:
        """Mark the span of one token (and scroll to it); -1 clears the mark."""
        if self._data is None or token_index < 0:
            self.setExtraSelections([])
            return
        n = self._data.span_of_token(token_index)
        if n >= len(self._doc_starts):
            self.setExtraSelections([])
            return
        sel = QTextEdit.ExtraSelection()
        cursor = QTextCursor(self.document())
        cursor.setPosition(self._doc_starts[n])
        cursor.setPosition(self._doc_ends[n], QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = cursor
        sel.format.setBackground(HIGHLIGHT)
        sel.format.setForeground(QColor("white"))
        sel.format.setProperty(QTextFormat.Property.FontWeight, QFont.Weight.Bold)
        self.setExtraSelections([sel])
        shown = QTextCursor(self.document())
        shown.setPosition(self._doc_starts[n])
        self.setTextCursor(shown)
        self.ensureCursorVisible()

    def span_tooltip(self, n: int) -> str:
        data = self._data
        if data is None:
            return ""
        span = data.spans[n]
        lines = [f"<b>{html.escape(repr(data.span_text(span)))}</b>"]
        lines += [html.escape(data.token_info(k)) for k in span.tokens]
        if len(span.tokens) > 1:
            lines.append("<i>these tokens split one character between them</i>")
        return "<br>".join(lines)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.viewport() and self._data is not None:
            kind = event.type()
            if kind in (QEvent.Type.MouseMove, QEvent.Type.ToolTip, QEvent.Type.MouseButtonRelease):
                pos = event.position().toPoint() if hasattr(event, "position") else event.pos()
                n = span_under(self, self._doc_starts, self._doc_ends, pos)
                token = self._data.spans[n].tokens[0] if n >= 0 else -1
                if kind == QEvent.Type.ToolTip:
                    if n >= 0:
                        QToolTip.showText(event.globalPos(), self.span_tooltip(n), self)
                    else:
                        QToolTip.hideText()
                    return True
                if kind == QEvent.Type.MouseButtonRelease and token >= 0 and not self.textCursor().hasSelection():
                    self.token_clicked.emit(token)
                elif kind == QEvent.Type.MouseMove and token != self._hover:
                    self._hover = token
                    self.token_hovered.emit(token)
            elif kind == QEvent.Type.Leave and self._hover != -1:
                self._hover = -1
                self.token_hovered.emit(-1)
        return super().eventFilter(obj, event)


class _IdModel(QAbstractListModel):
    """One row per token, its text made only when shown (a long text has tens of thousands)."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.data_: TokenizedText | None = None

    def set_data(self, data: TokenizedText | None) -> None:
        self.beginResetModel()
        self.data_ = data
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() or self.data_ is None else len(self.data_.ids)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or self.data_ is None:
            return None
        k = index.row()
        # quoted, so a token's leading or trailing spaces can be seen
        return f"{self.data_.ids[k]:>7}  '{render_bytes(self.data_.token_bytes[k])}'"


class IdList(QListView):
    """The ids of an encoding in order; selecting one emits its index."""

    currentRowChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)  # tens of thousands of ids: laid out in batches
        self.setBatchSize(2000)
        self.model_ = _IdModel(self)
        self.setModel(self.model_)
        self.selectionModel().currentRowChanged.connect(lambda cur, _: self.currentRowChanged.emit(cur.row()))

    def set_data(self, data: TokenizedText | None) -> None:
        self.model_.set_data(data)

    def count(self) -> int:
        return self.model_.rowCount()

    def currentRow(self) -> int:
        return self.currentIndex().row()

    def setCurrentRow(self, row: int) -> None:
        index = self.model_.index(row, 0)
        self.setCurrentIndex(index)
        self.scrollTo(index)


class EncodingPanel(QFrame):
    """One encoding: name and counts, the coloured spans, and the list of ids."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.counts = QLabel()
        self.counts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.counts.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.spans = TokenSpanView()
        self.ids = IdList()
        self.ids.setToolTip("Token ids in order; click one to highlight its span")
        self.ids.setFont(QFont("monospace"))
        self.ids.setFixedWidth(210)
        self.ids.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Ignored)  # as tall as the spans
        self.hover = QLabel(" ")
        self.hover.setTextFormat(Qt.TextFormat.PlainText)  # token text is the user's or a file's: never HTML
        self.hover.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.reason = QLabel()
        self.reason.setTextFormat(Qt.TextFormat.PlainText)
        self.reason.setWordWrap(True)
        self.reason.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason.setVisible(False)

        left = QVBoxLayout()
        left.addWidget(self.title)
        left.addWidget(self.counts)
        left.addStretch(1)
        left_box = QWidget()
        left_box.setLayout(left)
        left_box.setFixedWidth(190)
        middle = QVBoxLayout()
        middle.setContentsMargins(0, 0, 0, 0)
        middle.addWidget(self.spans)
        middle.addWidget(self.reason)
        middle.addWidget(self.hover)
        middle.addStretch(1)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 6, 6, 6)
        row.addWidget(left_box)
        row.addLayout(middle, 1)
        row.addWidget(self.ids)

        self.ids.currentRowChanged.connect(self._on_id_selected)
        self.spans.token_clicked.connect(self._on_span_clicked)
        self.spans.token_hovered.connect(self._on_span_hovered)
        self._data: TokenizedText | None = None
        self._unavailable = False
        self._title: tuple[str, str] | None = None
        self.pending = False

    @property
    def data(self) -> TokenizedText | None:
        return self._data

    @property
    def name(self) -> str:
        return self._title[0] if self._title is not None else ""

    @property
    def shown_whitespace(self) -> bool:
        return self.spans._show_whitespace

    def set_pending(self) -> None:
        """A new encoding is on its way (the old spans stay until it comes)."""
        self.pending = True
        self.counts.setText(self.counts.text() + ("" if "tokenizing" in self.counts.text() else
                                                  "<br>" + theme.colored("tokenizing…", "muted")))

    def set_title(self, name: str, detail: str = "") -> None:
        self._title = (name, detail)
        extra = f"<br>{theme.colored(detail, 'muted')}" if detail else ""
        self.title.setText(f"<b>{html.escape(name)}</b>{extra}")

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and getattr(self, "_title", None) is not None:
            self.set_title(*self._title)  # the muted and note colours are baked into the rich text
            if self._data is not None:
                self._show_counts(self._data)

    def set_tokenized(self, data: TokenizedText, show_whitespace: bool = False) -> None:
        self._data = data
        self.pending = False
        self._unavailable = False
        self.spans.setVisible(True)
        self.ids.setVisible(True)
        self.hover.setVisible(True)
        self.reason.setVisible(False)
        self.spans.set_tokenized(data, show_whitespace)
        self._show_counts(data)
        self.ids.set_data(data)
        self.hover.setText(" ")

    def _show_counts(self, data: TokenizedText) -> None:
        cpt = f"{data.chars_per_token:.2f}" if data.ids else "–"
        lines = [f"{data.num_tokens:,} tokens", f"{data.num_chars:,} characters", f"{data.num_bytes:,} bytes",
                 f"{cpt} characters / token"]
        notes = "".join(f"<br>{theme.colored(n, 'error')}" for n in data.notes)
        self.counts.setTextFormat(Qt.TextFormat.RichText)
        self.counts.setText("<br>".join(lines) + notes)
        self.counts.setWordWrap(True)

    def set_unavailable(self, name: str, reason: str) -> None:
        self._data = None
        self.pending = False
        self._unavailable = True
        self.set_title(name)
        self.counts.setTextFormat(Qt.TextFormat.RichText)
        self.counts.setWordWrap(True)
        self.counts.setText("")
        self.spans.set_tokenized(None)
        self.spans.setVisible(False)
        self.ids.set_data(None)
        self.ids.setVisible(False)
        self.hover.setVisible(False)
        self.reason.setText(f"Not available: {reason}")
        self.reason.setVisible(True)
        self._fit_wrapped_labels()

    @property
    def reason_text(self) -> str:
        return self.reason.text() if self._unavailable else ""

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_wrapped_labels()

    def _fit_wrapped_labels(self) -> None:
        """Rows live in a scroll area, which lays them out without height-for-width: give each wrapped line
        of the reason and the counts the height it needs at the current width."""
        for label in (self.reason, self.counts, self.title):
            height = label.heightForWidth(label.width()) if label.isVisible() and label.width() > 0 else -1
            if height >= 0:  # -1: the label cannot tell yet (no text laid out)
                label.setMinimumHeight(height)

    @Slot(int)
    def _on_id_selected(self, row: int) -> None:
        self.spans.highlight_token(row)
        if self._data is not None and 0 <= row < len(self._data.ids):
            self.hover.setText(self._data.token_info(row))

    @Slot(int)
    def _on_span_clicked(self, token_index: int) -> None:
        self.ids.setCurrentRow(token_index)  # highlights the span too

    @Slot(int)
    def _on_span_hovered(self, token_index: int) -> None:
        if self._data is None:
            return
        if token_index < 0:
            self.hover.setText(" ")
            return
        span = self._data.spans[self._data.span_of_token(token_index)]
        self.hover.setText("   ".join(self._data.token_info(k) for k in span.tokens))
