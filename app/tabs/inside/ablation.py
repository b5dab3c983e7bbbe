"""Ablation: switch heads, a layer's attention or its MLP off (zeroed, or replaced by their mean over the
text) and compare with the intact model: each token's loss change as tinted text, and the next-token
distribution at a chosen position side by side. "Sweep heads" ablates each head in turn and ranks them.

The parts grid has one row per block: a box per head, then the whole attention and the MLP. After a sweep,
head boxes are tinted by how much removing that head raised the text's loss.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, Qt, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QSplitter,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.tabs.inside.session import InsideSession, TextTokens
from app.tabs.inside.tinted_text import TintedTokenText, tint_colours
from engine import AblationEffect, HeadSweep, make_ablation, run_ablation, run_head_sweep

ATTN, MLP = "attention", "mlp"
DIST_ROWS = 10


class PartsGrid(QTableWidget):
    """Rows: blocks; columns: heads 0..H-1, then "attn" (the whole attention) and "MLP"; checkable cells."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.n_layers = self.n_heads = 0
        self.sweep: np.ndarray | None = None
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # Fixed sizes, from the font: headers that fit their contents measure every cell (again after each
        # change, and from a timer), which took 100-260 ms of the GUI thread for a 12-30 block model.
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self._fit_sections()
        self.cellClicked.connect(self._toggle)

    def _fit_sections(self) -> None:
        """Columns wide enough for a check box and a sweep's "+00.00", rows for a line of text or a box."""
        metrics = self.fontMetrics()
        indicator = self.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, self)
        cell = indicator + metrics.horizontalAdvance(" +00.00") + 16
        header = max(metrics.horizontalAdvance(label) for label in ("attn", "MLP")) + 16
        self.horizontalHeader().setDefaultSectionSize(max(cell, header))
        self.verticalHeader().setDefaultSectionSize(max(metrics.height(), indicator) + 8)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self._fit_sections()

    def set_shape(self, n_layers: int, n_heads: int) -> None:
        if (n_layers, n_heads) == (self.n_layers, self.n_heads):
            return
        self.n_layers, self.n_heads, self.sweep = n_layers, n_heads, None
        self.clear()
        self.setRowCount(n_layers)
        self.setColumnCount(n_heads + 2)
        self.setHorizontalHeaderLabels([str(h) for h in range(n_heads)] + ["attn", "MLP"])
        self.setVerticalHeaderLabels([f"block {b}" for b in range(n_layers)])
        for layer in range(n_layers):
            for col in range(n_heads + 2):
                item = QTableWidgetItem()
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                item.setToolTip(self._tip(layer, col))
                self.setItem(layer, col, item)

    def _tip(self, layer: int, col: int) -> str:
        if col < self.n_heads:
            tip = f"Head {layer}.{col}: its slice of block {layer}'s attention output"
            if self.sweep is not None:
                tip += f"; removing it alone changes the text's loss by {self.sweep[layer, col]:+.4f} nats"
            return tip
        return f"Block {layer}'s whole {'attention' if col == self.n_heads else 'MLP'} output"

    @Slot(int, int)
    def _toggle(self, row: int, col: int) -> None:
        item = self.item(row, col)
        if item is not None:  # a click anywhere in the cell, not only on the box
            checked = item.checkState() == Qt.CheckState.Checked
            item.setCheckState(Qt.CheckState.Unchecked if checked else Qt.CheckState.Checked)

    def selected(self) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        heads, attention, mlp = [], [], []
        for layer in range(self.n_layers):
            for col in range(self.n_heads + 2):
                if self.item(layer, col).checkState() != Qt.CheckState.Checked:
                    continue
                if col < self.n_heads:
                    heads.append((layer, col))
                elif col == self.n_heads:
                    attention.append(layer)
                else:
                    mlp.append(layer)
        return heads, attention, mlp

    def set_checked(self, heads: list[tuple[int, int]] = (), attention: list[int] = (), mlp: list[int] = ()) -> None:
        for layer in range(self.n_layers):
            for col in range(self.n_heads + 2):
                on = ((layer, col) in heads if col < self.n_heads else
                      layer in attention if col == self.n_heads else layer in mlp)
                self.item(layer, col).setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def set_sweep(self, change: np.ndarray | None) -> None:
        """Tint head cells by a sweep's loss change (orange: removing the head hurts)."""
        self.sweep = change
        scale = float(np.abs(change).max()) if change is not None and change.size else 1.0
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                item = self.item(layer, head)
                value = float(change[layer, head]) if change is not None else float("nan")
                background, text = tint_colours(self.palette(), value, scale or 1.0)
                item.setBackground(background)
                item.setForeground(text)
                item.setText("" if change is None else f"{value:+.2f}")
                item.setToolTip(self._tip(layer, head))


class AblationPanel(QWidget):
    def __init__(self, session: InsideSession, render: Callable[[int], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.render = render
        self.tokens: TextTokens | None = None
        self.effect: AblationEffect | None = None
        self.position = -1
        self.grid = PartsGrid()
        self.zero = QRadioButton("Zero")
        self.zero.setToolTip("Ablated parts output nothing")
        self.mean = QRadioButton("Mean")
        self.mean.setToolTip("Ablated parts output their average over this text's positions instead: removes "
                             "what they say about each token while keeping their typical size")
        self.zero.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.zero)
        group.addButton(self.mean)
        self.ablate_button = QPushButton("Ablate")
        self.ablate_button.setToolTip("Run the text with the ticked parts switched off and compare with the intact model")
        self.ablate_button.clicked.connect(self.run_ablation)
        self.sweep_button = QPushButton("Sweep heads")
        self.sweep_button.setToolTip("Ablate each head alone, in turn, and rank the heads by how much the text's "
                                     "loss rises (one forward per head)")
        self.sweep_button.clicked.connect(self.run_sweep)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Untick every part")
        self.clear_button.clicked.connect(lambda: self.grid.set_checked())
        buttons = QHBoxLayout()
        for w in (self.zero, self.mean, self.ablate_button, self.sweep_button, self.clear_button):
            buttons.addWidget(w)
        buttons.addStretch(1)
        self.ranking = QTableWidget(0, 2)
        self.ranking.setHorizontalHeaderLabels(["head", "loss change"])
        self.ranking.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.ranking.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.ranking.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.ranking.setToolTip("Heads ranked by the sweep: the loss change when each is removed alone. "
                                "Double-click one to ablate it.")
        self.ranking.cellDoubleClicked.connect(self._ablate_ranked)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(_heading("Parts to switch off"))
        lv.addWidget(self.grid, 3)
        lv.addLayout(buttons)
        lv.addWidget(_heading("Head sweep"))
        lv.addWidget(self.ranking, 2)

        self.summary = QLabel("Tick heads, attention or MLPs and press Ablate; or Sweep heads.")
        self.summary.setWordWrap(True)
        self.view = TintedTokenText()
        self.view.token_clicked.connect(self.set_position)
        self.dist_label = QLabel("Next-token distribution: click a token above.")
        self.dist = QTableWidget(0, 4)
        self.dist.setHorizontalHeaderLabels(["next token", "intact", "ablated", "change (points)"])
        self.dist.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.dist.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.dist.setToolTip("The most probable next tokens of either model after the chosen token, with their "
                             "probability in each")
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(_heading("Change in each token's loss (orange: worse without the parts, blue: better)"))
        rv.addWidget(self.summary)
        rv.addWidget(self.view, 2)
        rv.addWidget(self.dist_label)
        rv.addWidget(self.dist, 3)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def set_model_shape(self, n_layers: int, n_heads: int) -> None:
        self.grid.set_shape(n_layers, n_heads)

    def clear_results(self) -> None:
        self.effect = None
        self.view.clear_tokens()
        self.dist.setRowCount(0)
        self.ranking.setRowCount(0)
        self.grid.set_sweep(None)
        self.summary.setText("Tick heads, attention or MLPs and press Ablate; or Sweep heads.")

    @Slot()
    def run_ablation(self) -> None:
        tokens = self.session.tokens()
        if tokens is None:
            return
        heads, attention, mlp = self.grid.selected()
        if not (heads or attention or mlp):
            self.session.message.emit("Tick at least one head, attention or MLP to switch off.")
            return
        model = self.session.state.model
        mean = self.mean.isChecked()

        def job():
            # the means (mean-ablation) come from a forward too: inside the job, off the GUI thread
            ablation = make_ablation(model, list(tokens.ids), heads=heads, attention=attention, mlp=mlp, mean=mean)
            yield from run_ablation(model, list(tokens.ids), ablation, DIST_ROWS)
        self.session.start("Running the intact and the ablated model…", job(),
                           lambda result, tokens=tokens: self.show_effect(tokens, result),
                           "Ablation done: hover a token for its loss change, click one for the next-token "
                           "distributions after it.")

    @Slot()
    def run_sweep(self) -> None:
        tokens = self.session.tokens()
        if tokens is None:
            return
        if len(tokens.ids) < 2:
            self.session.message.emit("A sweep needs at least two tokens.")
            return
        job = run_head_sweep(self.session.state.model, list(tokens.ids), mean=self.mean.isChecked())
        self.session.start("Ablating each head in turn…", job, self.show_sweep,
                           "Sweep done: heads ranked by how much removing each raises the text's loss.")

    def show_effect(self, tokens: TextTokens, effect: Any) -> None:
        if not isinstance(effect, AblationEffect):
            return
        self.tokens, self.effect = tokens, effect
        change = effect.loss_change
        tips = []
        for k, label in enumerate(tokens.labels):
            if k == 0:
                tips.append(f"token 0 {label!r}: the first token, nothing predicts it")
            else:
                tips.append(f"token {k} {label!r}: loss {effect.intact_loss[k]:.3f} → {effect.ablated_loss[k]:.3f} "
                            f"nats ({change[k]:+.3f}); click to see the next-token distribution after it")
        self.view.set_tokens(list(tokens.pieces), change, tips)
        self.summary.setText(f"Without {html.escape(effect.what)}: mean loss change {effect.mean_loss_change:+.4f} "
                             f"nats per token (intact {np.nanmean(effect.intact_loss[1:]) if len(tokens.ids) > 1 else 0:.3f}).")
        self.set_position(len(tokens.ids) - 1)

    @Slot(int)
    def set_position(self, t: int) -> None:
        """Show the next-token distributions after token t, intact and ablated."""
        effect, tokens = self.effect, self.tokens
        if effect is None or tokens is None or not 0 <= t < len(tokens.ids):
            return
        self.position = t
        probs: dict[int, list[float]] = {}
        for i, p, q in zip(effect.intact_top_ids[t], effect.intact_top_probs[t], effect.ablated_probs_of_intact_top[t]):
            probs[int(i)] = [float(p), float(q)]
        for i, q, p in zip(effect.ablated_top_ids[t], effect.ablated_top_probs[t], effect.intact_probs_of_ablated_top[t]):
            probs.setdefault(int(i), [float(p), float(q)])
        rows = sorted(probs.items(), key=lambda kv: -max(kv[1]))[:DIST_ROWS]
        self.dist.setRowCount(len(rows))
        scale = max(abs(q - p) for _, (p, q) in rows) if rows else 1.0
        for r, (token, (p, q)) in enumerate(rows):
            cells = [repr(self.render(token)), f"{p * 100:.2f}%", f"{q * 100:.2f}%", f"{(q - p) * 100:+.2f}"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 3:
                    background, fg = tint_colours(self.palette(), q - p, scale or 1.0)
                    item.setBackground(background)
                    item.setForeground(fg)
                self.dist.setItem(r, c, item)
        self.dist_label.setText(f"Next token after token {t} {tokens.labels[t]!r}: KL(intact ‖ ablated) = "
                                f"{effect.kl[t]:.4f} nats")
        self.view.set_tokens(self.view.pieces, self.view.values, self.view.tooltips, selected=t)

    def show_sweep(self, sweep: Any) -> None:
        if not isinstance(sweep, HeadSweep):
            return
        self.grid.set_sweep(sweep.loss_change)
        ranking = sweep.ranking()
        self.ranking.setRowCount(len(ranking))
        for r, (layer, head, change) in enumerate(ranking):
            self.ranking.setItem(r, 0, QTableWidgetItem(f"{layer}.{head}"))
            self.ranking.setItem(r, 1, QTableWidgetItem(f"{change:+.4f}"))
        top = ", ".join(f"{la}.{h} ({c:+.3f})" for la, h, c in ranking[:3])
        self.summary.setText(f"Sweep ({'mean' if sweep.mean else 'zero'}-ablation): the text's loss is "
                             f"{sweep.intact_loss:.3f} nats intact; the heads that matter most: {top}. "
                             "Double-click a head in the list to ablate it.")

    @Slot(int, int)
    def _ablate_ranked(self, row: int, _col: int) -> None:
        item = self.ranking.item(row, 0)
        if item is None or self.session.busy:
            return
        layer, head = (int(x) for x in item.text().split("."))
        self.grid.set_checked(heads=[(layer, head)])
        self.run_ablation()


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight: bold;")
    label.setForegroundRole(QPalette.ColorRole.WindowText)
    return label
