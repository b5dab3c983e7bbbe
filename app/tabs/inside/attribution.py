"""Attribution: which earlier tokens the prediction at one position rests on, as tinted text.

Pick a position (click a token, or the spin box), the next token to explain (the model's top one, or one you
type) and a method; the job runs off the GUI thread (integrated gradients takes `steps` forward and backward
passes, in batches, stoppable between them).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.tabs.inside.session import InsideSession, TextTokens
from app.tabs.inside.tinted_text import TintedTokenText
from engine import GRADIENT_X_INPUT, INTEGRATED_GRADIENTS, Attribution, run_attribution

EXPLAIN = (
    "<b>What the numbers mean.</b> Both methods look at the logit (the score before the softmax) of the next token "
    "being explained, and ask how it depends on each input token's embedding vector (before the position is "
    "added).<br><br><b>Gradient × input</b>: for each token, the size (L2 norm) of its embedding multiplied "
    "element-wise by the gradient of the logit with respect to it. Never negative; large = this token's vector "
    "matters a lot, locally. Only relative sizes mean something.<br><br><b>Integrated gradients</b>: each "
    "token's embedding is scaled from zero up to its real value in <i>steps</i> steps; the gradients along the "
    "way are averaged and multiplied by the embedding, summed over its dimensions. Signed: orange pushes the "
    "logit up, blue pulls it down. The scores add up to the logit's change from all-zero embeddings to the "
    "real text (shown after a run): more steps, closer match."
)


def _tooltips(tokens: TextTokens, result: Attribution) -> list[str]:
    total = float(np.abs(result.scores).sum()) or 1.0
    tips = []
    for k, label in enumerate(tokens.labels):
        if k > result.position:
            tips.append(f"token {k} {label!r}: after the position explained, it cannot matter (the model is causal)")
        else:
            score = float(result.scores[k])
            tips.append(f"token {k} {label!r}: {score:+.4g} ({abs(score) / total:.0%} of the total size)")
    return tips


class AttributionPanel(QWidget):
    def __init__(self, session: InsideSession, render: Callable[[int], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.render = render
        self.tokens: TextTokens | None = None
        self.result: Attribution | None = None
        self.position = QSpinBox()
        self.position.setPrefix("after token ")
        self.position.setToolTip("Explain the prediction made after this token (from 0); or click a token below")
        self.position.setRange(0, 0)
        self.target = QComboBox()
        self.target.addItem("the model's top token", None)
        self.target.addItem("this token:", "chosen")
        self.target.setToolTip("Which next token to explain")
        self.chosen = QLineEdit()
        self.chosen.setPlaceholderText("token text")
        self.chosen.setToolTip("The next token to explain: text that the tokenizer makes into one token")
        self.chosen.setMaximumWidth(110)
        self.method = QComboBox()
        self.method.addItem("Gradient × input", GRADIENT_X_INPUT)
        self.method.addItem("Integrated gradients", INTEGRATED_GRADIENTS)
        self.method.setToolTip(EXPLAIN)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1024)
        self.steps.setValue(32)
        self.steps.setPrefix("steps ")
        self.steps.setToolTip("Integrated gradients: points on the path from zero embeddings to the text's "
                              "(more: slower, and the scores add up more exactly)")
        self.run_button = QPushButton("Attribute")
        self.run_button.setToolTip("Compute the attribution (off the GUI thread; Stop ends it)")
        self.run_button.clicked.connect(self.run)
        help_label = QLabel("<u>What do the numbers mean?</u>")
        help_label.setToolTip(EXPLAIN)
        help_label.setForegroundRole(QPalette.ColorRole.Link)
        self.method.currentIndexChanged.connect(self._update_controls)
        self.target.currentIndexChanged.connect(self._update_controls)
        controls = QHBoxLayout()
        for w in (self.position, self.target, self.chosen, self.method, self.steps, self.run_button):
            controls.addWidget(w)
        controls.addStretch(1)
        controls.addWidget(help_label)
        self.summary = QLabel("Pick a position (click a token) and press Attribute.")
        self.summary.setWordWrap(True)
        self.view = TintedTokenText()
        self.view.setToolTip(EXPLAIN)
        self.view.token_clicked.connect(self._on_token_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(self.view, 1)
        self._update_controls()

    def set_tokens(self, tokens: TextTokens | None) -> None:
        """A new text (or none): show it untinted, the position at its last token."""
        self.tokens, self.result = tokens, None
        if tokens is None:
            self.view.clear_tokens()
            return
        self.position.setRange(0, len(tokens.ids) - 1)
        self.position.setValue(len(tokens.ids) - 1)
        self.view.set_tokens(list(tokens.pieces), None, [f"token {k} {lab!r}: click to explain the prediction "
                                                         "after it" for k, lab in enumerate(tokens.labels)])
        self.summary.setText("Pick a position (click a token) and press Attribute.")

    @Slot()
    def _update_controls(self) -> None:
        self.steps.setEnabled(self.method.currentData() == INTEGRATED_GRADIENTS)
        self.chosen.setEnabled(self.target.currentData() == "chosen")

    @Slot(int)
    def _on_token_clicked(self, k: int) -> None:
        self.position.setValue(k)
        if self.tokens is not None and self.result is None:
            self.view.set_tokens(list(self.tokens.pieces), None, self.view.tooltips, selected=k, shown_until=k)

    def chosen_target(self) -> int | None | str:
        """None: the top token; an id; or a message saying why the typed text is not one token."""
        if self.target.currentData() != "chosen":
            return None
        tokenizer = self.session.state.tokenizer
        ids = tokenizer.encode(self.chosen.text()) if tokenizer is not None and self.chosen.text() else []
        if len(ids) != 1:
            return (f"“{self.chosen.text()}” is {len(ids)} tokens, not one: type the text of a single token"
                    if ids else "Type the next token to explain, or pick the model's top token.")
        return int(ids[0])

    @Slot()
    def run(self) -> None:
        tokens = self.session.tokens()
        if tokens is None:
            return
        if tokens != self.tokens:
            self.set_tokens(tokens)
        target = self.chosen_target()
        if isinstance(target, str):
            self.session.message.emit(target)
            return
        position = min(self.position.value(), len(tokens.ids) - 1)
        method = self.method.currentData()
        job = run_attribution(self.session.state.model, list(tokens.ids), position, target, method,
                              self.steps.value())
        self.session.start(f"Attribution for the token after position {position}…", job,
                           lambda result, tokens=tokens: self.show_result(tokens, result),
                           "Attribution done: hover a token for its score.")

    def show_result(self, tokens: TextTokens, result: Any) -> None:
        if not isinstance(result, Attribution):
            return
        self.tokens, self.result = tokens, result
        self.view.set_tokens(list(tokens.pieces), np.concatenate([result.scores, np.full(len(tokens.ids) - len(
            result.scores), np.nan, np.float32)]), _tooltips(tokens, result), selected=result.position,
            shown_until=result.position)
        what = ("Gradient × input" if result.method == GRADIENT_X_INPUT else
                f"Integrated gradients ({result.steps} steps: scores add up to {float(result.scores.sum()):+.3f}, "
                f"the logit's change from zero embeddings is {result.target_logit - result.baseline_logit:+.3f})")
        self.summary.setText(f"{what} for the next token <b>{_html(self.render(result.target))}</b> "
                             f"(p = {result.target_prob:.3f}) after token {result.position} "
                             f"<b>{_html(tokens.labels[result.position])}</b>. Hover a token for its score.")


def _html(text: str) -> str:
    return html.escape(repr(text))
