"""The text box the Attention and Inside tabs run the model on, with Run and Sample text beside it.

The box starts with a passage of the current corpus (`default_text`) and follows a new corpus or model, unless
the user typed their own text. Ctrl+Enter runs, as the button does; the tab connects both (`run_button.clicked`,
`shortcut.activated`), since the Attention tab's button also stops a run.
"""
from __future__ import annotations

from typing import Any, Protocol

from PySide6.QtCore import SignalInstance, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from engine import Corpus, is_synthetic

FALLBACK_TEXT = "The cat sat on the mat. The cat sat on the mat again, because the mat was warm."
SYNTHETIC_CHARS = 120  # a few whole lines of a synthetic task: its pattern shows best when short


def default_text(corpus: Corpus | None, max_chars: int = 400) -> str:
    """A passage of the current corpus; for a synthetic task (copy, sort...), a few whole lines."""
    if corpus is None:
        return FALLBACK_TEXT[:max_chars]
    if is_synthetic(corpus.source) or is_synthetic(corpus.name):
        limit = min(SYNTHETIC_CHARS, max_chars)
        text = ""
        for line in corpus.text().splitlines()[:12]:
            if len(text) + len(line) + 1 > limit:
                break
            text += line + "\n"
        return text or corpus.sample_passage(limit)
    return corpus.sample_passage(max_chars)


class CorpusSource(Protocol):
    """What the bar reads of the app state (a widget may not import app.state, which imports the jobs)."""

    corpus: Corpus | None
    config: Any  # the current model's ModelConfig, or None
    corpus_changed: SignalInstance


class TextRunBar(QWidget):
    """Public: text, run_button, sample_button, shortcut, make_default_text, update_default_text."""

    def __init__(self, state: CorpusSource, placeholder: str, tooltip: str, run_tooltip: str, height: int,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText(placeholder)
        self.text.setToolTip(tooltip)
        self.text.setMaximumHeight(height)
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setToolTip(run_tooltip)
        self.sample_button = QPushButton("Sample text")
        self.sample_button.setToolTip("Put a passage of the current corpus back in the box")
        self.sample_button.clicked.connect(lambda: self.text.setPlainText(self.make_default_text()))
        self.shortcut = QShortcut(QKeySequence("Ctrl+Return"), self)
        buttons = QVBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.sample_button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)
        self._default_text = self.make_default_text()
        self.text.setPlainText(self._default_text)
        state.corpus_changed.connect(self.update_default_text)

    def make_default_text(self) -> str:
        # A char model reads one token per character: keep the sample within its context.
        context = self.state.config.context_length if self.state.config is not None else 400
        return default_text(self.state.corpus, max_chars=min(400, context))

    @Slot()
    def update_default_text(self) -> None:
        """A new corpus or model: replace the sample text unless the user typed their own."""
        new_default = self.make_default_text()
        if self.text.toPlainText() in (self._default_text, ""):
            self.text.setPlainText(new_default)
        self._default_text = new_default
