"""A BPE's merges as a searchable table: rank, the pair merged, and the token it made."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from engine import render_bytes

Merge = tuple[int, bytes, bytes, bytes]  # rank, left, right, merged (engine.bpe.merges_table)


def _shown(data: bytes) -> str:
    # Quoted so leading spaces, which matter a lot in BPE tokens, stay visible.
    return f"'{render_bytes(data)}'"


class MergesModel(QAbstractTableModel):
    HEADERS = ("Rank", "Pair", "Result")

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._rows: list[tuple[int, str, str]] = []

    def set_merges(self, merges: list[Merge]) -> None:
        self.beginResetModel()
        self._rows = [(rank, f"{_shown(left)} + {_shown(right)}", _shown(merged))
                      for rank, left, right, merged in merges]
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else 3

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row[index.column()]
        if role == Qt.ItemDataRole.UserRole:  # sort ranks as numbers
            return row[0] if index.column() == 0 else row[index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


class MergesView(QWidget):
    """The table with a filter box above it (the filter searches every column)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = MergesModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Search merges (e.g. 'the' or a rank)…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setFont(QFont("monospace"))
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.count = QLabel("No BPE trained yet.")
        self.count.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        self.filter.textChanged.connect(self._update_count)

    def set_merges(self, merges: list[Merge] | None, note: str = "") -> None:
        self.model.set_merges(merges or [])
        self._note = note
        self._update_count()

    def _update_count(self, *args: Any) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        if total == 0:
            self.count.setText(getattr(self, "_note", "") or "No merges to show.")
        elif shown == total:
            self.count.setText(f"{total:,} merges, in the order they were learned")
        else:
            self.count.setText(f"{shown:,} of {total:,} merges match")
