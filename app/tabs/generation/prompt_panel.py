"""The Generation tab's prompt: the text box, its token count against the context (with what the tokenizer
cannot represent), prompt-engineering templates, and the chat panel that turns the box into a message box.

Once per session an empty prompt gets the start of a line from the corpus, so a first Generate shows the
model continuing text it knows.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from app import theme
from app.formatting import unknown_chars_note
from app.state import AppState
from app.tabs.generation.chat import ChatPanel
from engine import unknown_characters

PROMPT_PLACEHOLDER = "Write a prompt… (Ctrl+Enter generates)"
CHAT_PLACEHOLDER = "Your message… (Ctrl+Enter sends it; empty: the last one answered again)"

TEMPLATES = {
    "Zero-shot": ("Instruction only, no example: the model must infer the task from the words alone.",
                  "Translate English to French:\ncheese =>"),
    "One-shot": ("One worked example before the query shows the format of the answer.",
                 "Translate English to French:\nsea otter => loutre de mer\ncheese =>"),
    "Few-shot": ("Several worked examples before the query: small models follow a pattern far better "
                 "than an instruction.",
                 "Translate English to French:\nsea otter => loutre de mer\npeppermint => menthe poivrée\n"
                 "plush giraffe => girafe peluche\ncheese =>"),
}


class PromptPanel(QWidget):
    """Public: prompt, prompt_info, templates_button, chat, insert_template, update_info, offer_starter."""

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._starter_offered = False
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText(PROMPT_PLACEHOLDER)
        self.prompt.setToolTip("The prompt: the text the model continues. Every column continues the same prompt.")
        self.prompt.setMinimumHeight(self.prompt.fontMetrics().lineSpacing() * 2 + 12)
        self.prompt.textChanged.connect(self.update_info)
        self.prompt_info = QLabel()
        self.prompt_info.setTextFormat(Qt.TextFormat.RichText)
        self.prompt_info.setWordWrap(True)
        self.templates_button = QToolButton()
        self.templates_button.setText("Insert template")
        self.templates_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.templates_button.setToolTip("Prompt-engineering templates: zero-shot (instruction only), one-shot "
                                         "(one example) and few-shot (several examples)")
        menu = QMenu(self.templates_button)
        for name, (tip, text) in TEMPLATES.items():
            action = menu.addAction(name, lambda t=text: self.insert_template(t))
            action.setToolTip(tip)
        menu.setToolTipsVisible(True)
        self.templates_button.setMenu(menu)
        self.chat = ChatPanel()
        self.chat.mode_changed.connect(self._on_chat_mode)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Prompt</b>"))
        head.addWidget(self.prompt_info, 1)
        head.addWidget(self.templates_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(self.chat)
        layout.addWidget(self.prompt, 1)

    @Slot(bool)
    def _on_chat_mode(self, on: bool) -> None:
        self.prompt.setPlaceholderText(CHAT_PLACEHOLDER if on else PROMPT_PLACEHOLDER)

    def insert_template(self, text: str) -> None:
        cursor = self.prompt.textCursor()
        if self.prompt.toPlainText().strip():
            cursor.insertText(("\n" if not cursor.atBlockStart() else "") + text)
        else:
            self.prompt.setPlainText(text)
            cursor = self.prompt.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            self.prompt.setTextCursor(cursor)
        self.prompt.setFocus()

    @Slot()
    def update_info(self) -> None:
        """The prompt's token count against the context, and notes (in the theme's warning colour)."""
        tokenizer, config = self.state.tokenizer, self.state.config
        if tokenizer is None or config is None:
            self.prompt_info.setText("")
            return
        prompt = self.prompt.toPlainText()
        n = len(tokenizer.encode(prompt))
        parts = [f"{n:,} token{'s' if n != 1 else ''} · context {config.context_length:,}"]
        if n >= config.context_length:
            parts.append(theme.colored(f"longer than the context: the model sees only the last "
                                       f"{config.context_length - 1:,} tokens", "warning"))
        unknown = unknown_characters(tokenizer, prompt)
        if unknown:
            parts.append(theme.colored(unknown_chars_note(unknown), "warning"))
        self.prompt_info.setText(" · ".join(parts))

    @Slot()
    def offer_starter(self) -> None:
        """Once per session, an empty prompt gets the start of a line from the corpus (a person may clear it
        for an empty prompt)."""
        corpus = self.state.corpus
        if self._starter_offered or corpus is None or self.prompt.toPlainText():
            return
        for document in corpus.documents[:50]:
            for line in document.splitlines():
                words = line.split()
                if len(words) >= 3 and sum(c.isalpha() for c in line) > len(line) / 2:
                    self._starter_offered = True
                    self.prompt.setPlainText(" ".join(words[:4]) + " ")
                    return
