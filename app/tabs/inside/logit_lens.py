"""The logit lens as a grid: blocks (rows) x positions (columns).

Each cell is what the model would predict next if it stopped after that block (its final norm and output head
applied to the block's output): the top token and its probability, tinted by that probability; the top 5 on
hover. The last row is the model's own prediction. The mode box shows instead the rank of the token that
really comes next (1 = the lens's top guess) or the entropy of the lens's distribution.
"""
from __future__ import annotations

import html
import math
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from app.tabs.inside.tinted_text import tint_colours
from app.theme import RUN_COLORS
from engine import LogitLens

MODE_PROB, MODE_RANK, MODE_ENTROPY = "prob", "rank", "entropy"
LENS_TINT = QColor(RUN_COLORS[0])
HOVER_TOP = 5
LEGENDS = {
    MODE_PROB: "Top token at each block's output and its probability (darker = more sure). The last row is the "
               "model's own prediction. Hover a cell for the top 5.",
    MODE_RANK: "Rank of the token that really comes next in the lens's guess (#1 = its top guess; darker = "
               "better). Watch it climb through the blocks.",
    MODE_ENTROPY: "Entropy of each block's next-token distribution in nats (0 = certain; darker = more certain).",
}

Index = QModelIndex | QPersistentModelIndex


class LensModel(QAbstractTableModel):
    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.lens: LogitLens | None = None
        self.labels: list[str] = []  # one per position
        self.render: Any = str  # token id -> label
        self.mode = MODE_PROB
        self.palette = QPalette()
        self.vocab_size = 2  # scales rank and entropy: log(vocab) is the worst of each

    def set_lens(self, lens: LogitLens | None, labels: list[str], render: Any, vocab_size: int = 2) -> None:
        self.beginResetModel()
        self.lens, self.labels, self.render = lens, list(labels), render
        self.vocab_size = max(2, vocab_size)
        self.endResetModel()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if self.lens is not None:
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, self.columnCount() - 1))

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if self.lens is None or parent.isValid() else self.lens.top_ids.shape[0]

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if self.lens is None or parent.isValid() else self.lens.top_ids.shape[1]

    def value(self, layer: int, t: int) -> float:
        """The cell's tint, 0..1 (NaN: none)."""
        lens = self.lens
        if self.mode == MODE_PROB:
            return float(lens.top_probs[layer, t, 0])
        worst = math.log(self.vocab_size)
        if self.mode == MODE_RANK:
            rank = int(lens.next_rank[layer, t])
            return float("nan") if rank < 0 else 1.0 - math.log1p(rank) / worst
        return 1.0 - float(lens.entropy[layer, t]) / worst

    def text(self, layer: int, t: int) -> str:
        lens = self.lens
        if self.mode == MODE_PROB:
            return f"{_short(self.render(int(lens.top_ids[layer, t, 0])))}\n{lens.top_probs[layer, t, 0] * 100:.0f}%"
        if self.mode == MODE_RANK:
            rank = int(lens.next_rank[layer, t])
            return "—" if rank < 0 else f"#{rank + 1:,}"
        return f"{lens.entropy[layer, t]:.2f}"

    def tooltip(self, layer: int, t: int) -> str:
        lens = self.lens
        last = layer == lens.top_ids.shape[0] - 1
        head = (f"<b>block {layer}</b>{' (the model’s output)' if last else ''}, after token {t} "
                f"<b>{html.escape(self.labels[t])}</b>")
        rows = "".join(f"<tr><td>{html.escape(self.render(int(i)))}</td><td align=right>{p * 100:.1f}%</td></tr>"
                       for i, p in zip(lens.top_ids[layer, t, :HOVER_TOP], lens.top_probs[layer, t, :HOVER_TOP]))
        rank = int(lens.next_rank[layer, t])
        nxt = ("" if rank < 0 else f"actual next token <b>{html.escape(self.labels[t + 1])}</b>: rank "
               f"#{rank + 1:,}<br>")
        return f"{head}<table>{rows}</table>{nxt}entropy {lens.entropy[layer, t]:.2f} nats"

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if self.lens is None or not index.isValid():
            return None
        layer, t = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(layer, t)
        if role in (Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole):
            background, text = tint_colours(self.palette, self.value(layer, t), 1.0, LENS_TINT)
            return background if role == Qt.ItemDataRole.BackgroundRole else text
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tooltip(layer, t)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if self.lens is None:
            return None
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return _short(self.labels[section])
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"position {section}: {self.labels[section]!r}"
            return None
        last = section == self.lens.top_ids.shape[0] - 1
        if role == Qt.ItemDataRole.DisplayRole:
            return f"block {section}" + (" = output" if last else "")
        if role == Qt.ItemDataRole.ToolTipRole:
            return ("The model's own next-token prediction" if last else
                    f"The final norm and head applied to block {section}'s output")
        return None


def _short(label: str, width: int = 6) -> str:
    label = label.replace(" ", "\u2423")
    return label if len(label) <= width else label[:width - 1] + "…"


class LensPanel(QWidget):
    """Mode box, legend and the grid."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = LensModel(self)
        self.model.palette = self.palette()
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setWordWrap(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.horizontalHeader().setDefaultSectionSize(self.fontMetrics().horizontalAdvance("M") * 6)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() * 2 + 8)
        self.view.setSelectionMode(QTableView.SelectionMode.NoSelection)
        self.mode = QComboBox()
        self.mode.addItem("Top token and probability", MODE_PROB)
        self.mode.addItem("Rank of the actual next token", MODE_RANK)
        self.mode.addItem("Entropy", MODE_ENTROPY)
        self.mode.setToolTip("What each cell shows")
        self.mode.currentIndexChanged.connect(self._on_mode)
        self.legend = QLabel(LEGENDS[MODE_PROB])
        self.legend.setWordWrap(True)
        self.legend.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.mode)
        top.addWidget(self.legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)

    def set_lens(self, lens: LogitLens | None, labels: list[str], render: Any, vocab_size: int) -> None:
        self.model.palette = self.palette()
        self.model.set_lens(lens, labels, render, vocab_size)
        if lens is not None:
            self.view.scrollToTop()  # the text's start, reading order

    def _on_mode(self) -> None:
        mode = self.mode.currentData()
        self.legend.setText(LEGENDS[mode])
        self.model.set_mode(mode)

    def changeEvent(self, event: Any) -> None:
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange:
            self.model.palette = self.palette()
            self.model.set_mode(self.model.mode)  # repaint with the new base colour
