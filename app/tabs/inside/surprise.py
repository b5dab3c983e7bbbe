"""Per-token surprise: the text tinted by each token's loss, -ln p(token | the tokens before it).

Full colour at ln(vocab size), the loss of a uniform guess, so the tint means the same in every view and at
every training step. With "Over training", the text is a held-out slice of the corpus (the start of the
validation split, never trained on) as the model saw it at each evaluation of the last run: drag the slider
to watch which tokens get learned first.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.tabs.inside.tinted_text import TintedTokenText
from app.widgets.probe_slider import ProbeSlider, step_text
from app.widgets.token_text import text_of_rendered
from engine import perplexity


def loss_tooltips(labels: list[str], losses: np.ndarray) -> list[str]:
    tips = []
    for k, (label, loss) in enumerate(zip(labels, losses)):
        if not np.isfinite(loss):
            tips.append(f"token {k} {label!r}: the first token, nothing predicts it")
        else:
            tips.append(f"token {k} {label!r}: loss {loss:.3f} nats — the model gave it p = {math.exp(-loss):.4f} "
                        "after the tokens before it")
    return tips


def _summary(losses: np.ndarray, vocab_size: int) -> str:
    if losses.size < 2:
        return "One token: nothing to predict."
    mean = float(np.nanmean(losses[1:]))
    return (f"Perplexity {perplexity(losses):.2f} (mean loss {mean:.3f} nats over {losses.size - 1} predictions). "
            f"Darker = more surprising; full colour at ln {vocab_size:,} = {math.log(max(2, vocab_size)):.2f}, "
            "a uniform guess.")


class SurprisePanel(QWidget):
    probe_shown = Signal(int)  # index of the probe on screen

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.vocab_size = 2
        self._text: tuple[list[str], list[str], np.ndarray] | None = None  # pieces, labels, losses of the text
        self.probes: list[Any] = []
        self.summary = QLabel("Press Run to tint the text by each token's loss.")
        self.summary.setWordWrap(True)
        self.view = TintedTokenText()
        self.over_training = ProbeSlider(
            "Show a held-out slice of the corpus (never trained on) as the model saw it at each evaluation of the "
            "last run, instead of your text", "Training step of the evaluation shown",
            "Step through the recorded evaluations")
        self.over_training.label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.over_training.check.toggled.connect(self._refresh)
        self.over_training.slider.valueChanged.connect(self._refresh)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.over_training)
        layout.addWidget(self.summary)
        layout.addWidget(self.view, 1)
        self.set_probes([])

    def set_losses(self, pieces: list[str], labels: list[str], losses: np.ndarray | None, vocab_size: int) -> None:
        """The losses of the text box (None: cleared)."""
        self.vocab_size = vocab_size
        self._text = None if losses is None else (list(pieces), list(labels), np.asarray(losses, np.float32))
        if self.over_training.showing and losses is not None:
            self.over_training.check.setChecked(False)  # a new run on the text: show it
        self._refresh()

    def set_probes(self, probes: list[Any]) -> None:
        """The last run's probes that carry held-out losses (engine AttentionProbeEvent)."""
        self.probes = [p for p in probes if getattr(p, "heldout_loss", None) is not None]
        self.over_training.set_count(len(self.probes))
        if not self.probes:
            self.over_training.label.setText("no probes recorded yet")
        self._refresh()

    @Slot()
    def _refresh(self) -> None:
        if self.over_training.showing and self.probes:
            index = min(self.over_training.index, len(self.probes) - 1)
            probe = self.probes[index]
            labels = [str(t) for t in probe.heldout_tokens]
            pieces = [text_of_rendered(t) for t in labels]
            losses = np.asarray(probe.heldout_loss, np.float32)
            self.over_training.label.setText(step_text(probe.step, index, len(self.probes)))
            self.summary.setText(f"Held-out text at training step {probe.step:,}. " + _summary(losses, self.vocab_size))
            self.view.set_tokens(pieces, losses, loss_tooltips(labels, losses), scale=math.log(max(2, self.vocab_size)))
            self.probe_shown.emit(index)
            return
        if self.probes:
            self.over_training.label.setText(f"{len(self.probes)} evaluations recorded")
        if self._text is None:
            self.summary.setText("Press Run to tint the text by each token's loss.")
            self.view.clear_tokens()
            return
        pieces, labels, losses = self._text
        self.summary.setText(_summary(losses, self.vocab_size))
        self.view.set_tokens(pieces, losses, loss_tooltips(labels, losses), scale=math.log(max(2, self.vocab_size)))
