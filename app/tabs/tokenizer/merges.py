"""A BPE's merges as a searchable table: rank, the pair merged, and the token it made.

A real vocabulary has 50,000-200,000 merges: the rows are recovered and rendered to text in a job
(`merges_job`), the model answers each cell from that list, and the search filters it with one pass
over prepared strings. Nothing here asks Qt to sort or measure every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from PySide6.QtGui import QFont, QFontMetrics, QPalette
from PySide6.QtWidgets import QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from engine import Event, Tokenizer, merges_table, render_bytes

Row = tuple[int, str, str]  # rank, "left + right", merged (as shown)
FILTER_MS = 150


def _shown(data: bytes) -> str:
    # Quoted so leading spaces, which matter a lot in BPE tokens, stay visible.
    return f"'{render_bytes(data)}'"


def merge_rows(tokenizer: Tokenizer) -> tuple[Row, ...]:
    """Every merge of a BPE as table rows (recovering them takes seconds for a 100k vocabulary)."""
    return tuple((rank, f"{_shown(left)} + {_shown(right)}", _shown(merged))
                 for rank, left, right, merged in merges_table(tokenizer))


@dataclass(frozen=True)
class MergesListed(Event):
    tokenizer: Any
    rows: tuple[Row, ...]


def merges_job(tokenizer: Tokenizer):
    """A job: the rows of a tokenizer's merges."""
    yield MergesListed(tokenizer, merge_rows(tokenizer))


class MergesModel(QAbstractTableModel):
    HEADERS = ("Rank", "Pair", "Result")

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._rows: tuple[Row, ...] = ()
        self._keys: list[str] = []  # what the search looks in, lower case
        self._shown: list[int] | None = None  # indices of the rows that match the search (None: all)

    def set_rows(self, rows: tuple[Row, ...]) -> None:
        self.beginResetModel()
        self._rows = rows
        self._keys = []
        self._shown = None
        self.endResetModel()

    def set_filter(self, text: str) -> None:
        needle = text.strip().lower()
        self.beginResetModel()
        if not needle:
            self._shown = None
        else:
            if len(self._keys) != len(self._rows):
                self._keys = [f"{rank} {pair} {result}".lower() for rank, pair, result in self._rows]
            self._shown = [i for i, key in enumerate(self._keys) if needle in key]
        self.endResetModel()

    def total(self) -> int:
        return len(self._rows)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        if parent.isValid():
            return 0
        return len(self._rows) if self._shown is None else len(self._shown)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else 3

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            i = index.row() if self._shown is None else self._shown[index.row()]
            return self._rows[i][index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


class MergesView(QWidget):
    """The table, in the order the merges were learned, with a search box above it (searches every column)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = MergesModel(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Search merges (e.g. 'the' or a rank)…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setToolTip("Show only the merges whose rank, pair or result contains this text")
        self._filter_timer = QTimer(self, singleShot=True, interval=FILTER_MS)
        self._filter_timer.timeout.connect(self.apply_filter)
        self.filter.textChanged.connect(self._filter_timer.start)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        font = QFont("monospace")
        self.table.setFont(font)
        self.table.verticalHeader().setDefaultSectionSize(QFontMetrics(font).height() + 4)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        # Fixed widths: "resize to contents" would measure every one of 100,000 rows.
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(0, QFontMetrics(font).horizontalAdvance("0000000") + 12)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.count = QLabel("No BPE trained yet.")
        self.count.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.count.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count)
        self._note = ""

    def set_rows(self, rows: tuple[Row, ...] | None, note: str = "") -> None:
        """Show these rows (None or empty: none, with `note` saying why)."""
        self._note = note
        self.model.set_rows(rows or ())
        self.apply_filter()

    def apply_filter(self) -> None:
        self._filter_timer.stop()
        self.model.set_filter(self.filter.text())
        self._update_count()

    def shown_count(self) -> int:
        return self.model.rowCount()

    def _update_count(self) -> None:
        total, shown = self.model.total(), self.model.rowCount()
        if total == 0:
            self.count.setText(self._note or "No merges to show.")
        elif shown == total:
            self.count.setText(f"{total:,} merges, in the order they were learned")
        else:
            self.count.setText(f"{shown:,} of {total:,} merges match")
