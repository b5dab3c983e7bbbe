"""Chat mode of the Generation tab: a system prompt, the conversation so far, and which reply it keeps.

In chat mode the tab's prompt box holds the user's next message. Generate renders the conversation (system
prompt, earlier turns, the new message) with the model's chat template (engine `chat_prompt_ids`, exactly as
transformers' apply_chat_template) and every decoder column streams its own reply, stopping at the model's
end-of-turn tokens. The conversation goes on with one reply: column 1's unless another is picked under
"Keep reply of"; the choice can change until the next message is sent. The prompt box empties once the replies
are in; Generate with it empty writes the last message's replies again (so live regenerate re-answers it with the
columns' new settings).

The panel owns no engine job: the tab asks it for the prompt ids and hands it the replies when a run ends.
"""
from __future__ import annotations

import html

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine import Tokenizer, chat_prompt_ids, stop_token_ids

MODE_TIP = ("Chat mode: the prompt box holds your next message; the model's chat template turns the conversation "
            "into its prompt, and each column writes its own reply, stopping at the model's end-of-turn token.")
NO_TEMPLATE_TIP = ("This model has no chat template, so it has no chat mode: open an instruct model (one with a "
                   "tokenizer.json and a chat template) to chat.")
ROLE_COLOURS = {"system": "#777777", "user": "#0072B2", "assistant": "#009E73"}


class ChatPanel(QWidget):
    mode_changed = Signal(bool)  # chat mode switched on / off

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.tokenizer: Tokenizer | None = None
        self.history: list[dict[str, str]] = []  # finished turns, the kept replies included
        self.pending: tuple[str, list[str]] | None = None  # the last message and every column's reply to it

        self.enabled_box = QCheckBox("Chat")
        self.enabled_box.setToolTip(MODE_TIP)
        self.enabled_box.toggled.connect(self._on_toggled)
        self.system = QLineEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.system.setToolTip("System prompt: instructions the chat template puts before the conversation, "
                               "e.g. 'Answer in one sentence.' Empty: none (some templates add their own default).")
        self.system.textChanged.connect(self._render)
        self.keep = QComboBox()
        self.keep.setToolTip("Which column's reply the conversation keeps for the next turn")
        self.keep.currentIndexChanged.connect(self._render)
        self.keep_label = QLabel("Keep reply of")
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Forget the conversation and start again (the system prompt stays)")
        self.new_button.clicked.connect(self.reset)
        self.transcript = QTextBrowser()
        self.transcript.setToolTip("The conversation so far, as the next message will send it")
        self.transcript.setMaximumHeight(140)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.enabled_box)
        row.addWidget(self.system, 1)
        row.addWidget(self.keep_label)
        row.addWidget(self.keep)
        row.addWidget(self.new_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(row)
        layout.addWidget(self.transcript)
        self.set_tokenizer(None)

    # ------------------------------------------------------------------ state

    def active(self) -> bool:
        return self.enabled_box.isChecked() and self.enabled_box.isEnabled()

    def set_tokenizer(self, tokenizer: Tokenizer | None) -> None:
        """A new model: chat is possible only with a chat template; the conversation starts again."""
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.enabled_box.setEnabled(has_template)
        self.enabled_box.setToolTip(MODE_TIP if has_template else NO_TEMPLATE_TIP)
        self.reset()

    @Slot()
    def reset(self) -> None:
        self.history = []
        self.pending = None
        self.keep.clear()
        self._update_visibility()
        self._render()

    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        self._update_visibility()
        self.mode_changed.emit(self.active())

    def _update_visibility(self) -> None:
        on = self.active()
        for widget in (self.system, self.new_button, self.transcript):
            widget.setVisible(on)
        for widget in (self.keep_label, self.keep):
            widget.setVisible(on and self.pending is not None and len(self.pending[1]) > 1)

    # ------------------------------------------------------------------ turns

    def messages(self, message: str) -> list[dict[str, str]]:
        """The conversation the next generation sees: earlier turns (with the kept reply) and `message`; an empty
        message asks again for the replies to the last one."""
        if not message and self.pending is not None:
            return [*self.history, {"role": "user", "content": self.pending[0]}]
        return [*self._committed(), {"role": "user", "content": message}]

    def _committed(self) -> list[dict[str, str]]:
        turns = list(self.history)
        if self.pending is not None:
            message, replies = self.pending
            turns += [{"role": "user", "content": message},
                      {"role": "assistant", "content": replies[max(0, self.keep.currentIndex())]}]
        return turns

    def prompt_ids(self, message: str) -> list[int]:
        """Token ids of the conversation with `message` as the user's next turn, ready for the model to reply
        (ValueError with one line if the template refuses it)."""
        if self.tokenizer is None:
            raise ValueError("no tokenizer")
        system = self.system.text().strip() or None
        return chat_prompt_ids(self.tokenizer, self.messages(message), system=system)

    def finish_turn(self, message: str, replies_ids: list[list[int]], names: list[str]) -> None:
        """A generation ended: every column's reply (ids) to `message`; the earlier pending turn is kept."""
        if self.tokenizer is None:
            return
        if not message and self.pending is not None:
            message = self.pending[0]  # the last message answered again: the conversation before it stays
        else:
            self.history = self._committed()
        stops = stop_token_ids(self.tokenizer)
        replies = [self.tokenizer.decode(ids[:-1] if ids and ids[-1] in stops else ids) for ids in replies_ids]
        self.pending = (message, replies)
        self.keep.blockSignals(True)
        self.keep.clear()
        self.keep.addItems(names[:len(replies)])
        self.keep.blockSignals(False)
        self._update_visibility()
        self._render()

    @Slot()
    def _render(self) -> None:
        parts = []
        system = self.system.text().strip()
        turns = ([{"role": "system", "content": system}] if system else []) + self._committed()
        for turn in turns:
            colour = ROLE_COLOURS.get(turn["role"], "#777777")
            text = html.escape(turn["content"])  # pre-wrap: tabs, newlines and runs of spaces shown as written
            parts.append(f"<p style='white-space:pre-wrap'><b style='color:{colour}'>{turn['role']}</b>: {text}</p>")
        self.transcript.setHtml("".join(parts) or "<p style='color:#777777'>No messages yet: write one in the "
                                                  "prompt box and press Generate.</p>")
