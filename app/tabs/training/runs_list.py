"""The list of runs beside the training plots: one line per run in its colour, ticked while its curves show."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from app.tabs.training.run_data import RunData


def _swatch(color: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(color))
    return QIcon(pix)


class RunsList(QWidget):
    """Every run since the app started; the latest is in bold. Runs are told apart by `id(run)`."""

    visibility_changed = Signal(object, bool)  # id(run) (64 bits: not a Qt int), ticked
    clear_requested = Signal()  # "Clear earlier" was pressed

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setToolTip("Every run since the app started (and the opened checkpoint's history).\n"
                             "Untick a run to hide its curves.")
        self.list.setMinimumWidth(150)
        self.list.setMaximumWidth(220)
        self.clear_button = QPushButton("Clear earlier")
        self.clear_button.setToolTip("Forget every run but the latest")
        title = QLabel("Runs")
        title.setObjectName("sectionTitle")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.clear_button)
        self.list.itemChanged.connect(self._on_item_changed)
        self.clear_button.clicked.connect(self.clear_requested)

    def add(self, run: RunData) -> None:
        item = QListWidgetItem(_swatch(run.color), run.name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        item.setData(Qt.ItemDataRole.UserRole, id(run))
        self.list.blockSignals(True)
        self.list.addItem(item)
        self.list.blockSignals(False)
        self._mark_latest()

    def remove(self, run: RunData) -> None:
        for i in reversed(range(self.list.count())):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == id(run):
                self.list.takeItem(i)
        self._mark_latest()

    def move_to_end(self, run: RunData) -> None:
        """The run becomes the latest, ticked (it was opened again: it is what one wants to see)."""
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == id(run):
                self.list.blockSignals(True)
                item = self.list.takeItem(i)
                self.list.addItem(item)
                self.list.blockSignals(False)
                self._mark_latest()
                item.setCheckState(Qt.CheckState.Checked)  # tells the plots when it was hidden
                break

    def _mark_latest(self) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            font = item.font()
            font.setBold(i == self.list.count() - 1)
            item.setFont(font)

    @Slot(QListWidgetItem)
    def _on_item_changed(self, item: QListWidgetItem) -> None:
        self.visibility_changed.emit(item.data(Qt.ItemDataRole.UserRole), item.checkState() == Qt.CheckState.Checked)
