"""The widgets two tabs share (app/widgets): the Over training slider, the text box with Run, token text."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, QPoint, Qt, Signal  # noqa: E402
from PySide6.QtGui import QTextCharFormat, QTextCursor  # noqa: E402

from app.state import AppState  # noqa: E402
from app.widgets.probe_slider import ProbeSlider  # noqa: E402
from app.widgets.text_run_bar import TextRunBar  # noqa: E402
from app.widgets.token_text import TokenTextView, text_of_rendered  # noqa: E402
from engine import CharTokenizer, Corpus  # noqa: E402


def test_probe_slider_follows_new_probes_only_from_the_last_one(qtbot):
    bar = ProbeSlider("tip", "slider tip")
    qtbot.addWidget(bar)
    assert bar.play_button is None
    bar.set_count(0)
    assert not bar.check.isEnabled() and not bar.slider.isEnabled()
    bar.set_count(3)
    assert bar.check.isEnabled() and bar.index == 2  # at the end: follows
    bar.slider.setValue(0)
    bar.set_count(4)
    assert bar.index == 0 and bar.slider.maximum() == 3  # looking back: stays put
    bar.check.setChecked(True)
    bar.set_count(0)
    assert not bar.showing and not bar.check.isEnabled()


def test_probe_slider_play_walks_to_the_end_and_stops(qtbot):
    bar = ProbeSlider("tip", "slider tip", "play tip")
    qtbot.addWidget(bar)
    bar.set_count(3)
    seen = []
    bar.slider.valueChanged.connect(seen.append)
    bar.play_button.setChecked(True)
    assert bar.showing and bar.index == 0  # Play ticks Over training and starts from the first probe
    qtbot.waitUntil(lambda: not bar.play_button.isChecked(), timeout=5000)
    assert seen == [0, 1, 2] and bar.play_button.text() == "▶ Play"
    bar.play_button.setChecked(True)
    bar.check.setChecked(False)  # unticking stops playing
    assert not bar.play_button.isChecked()


def test_text_run_bar_follows_the_corpus_until_the_user_types(qtbot):
    state = AppState()
    bar = TextRunBar(state, "placeholder", "tip", "run tip", height=70)
    qtbot.addWidget(bar)
    assert bar.text.toPlainText()  # a fallback text before any corpus
    state.set_corpus(Corpus("copy", ["abcdef|abcdef\nqwerty|qwerty\n" * 20], source="copy"))
    assert bar.text.toPlainText().startswith("abcdef|abcdef\n")  # the sample was not the user's: replaced
    bar.text.setPlainText("my own text")
    state.set_corpus(Corpus("prose", ["A much longer document that is long enough to be a passage. " * 20]))
    assert bar.text.toPlainText() == "my own text"
    bar.sample_button.click()
    assert bar.text.toPlainText().startswith("A much longer document")


class Source(QObject):
    """What the bar reads of the app state, with a model of a given context length."""

    corpus_changed = Signal()

    def __init__(self, corpus: Corpus, context_length: int | None):
        super().__init__()
        self.corpus = corpus
        self.config = None if context_length is None else SimpleNamespace(context_length=context_length)


def test_text_run_bar_keeps_the_sample_within_the_models_context(qtbot):
    corpus = Corpus("prose", ["abc abc abc. " * 100])
    wide = TextRunBar(Source(corpus, None), "placeholder", "tip", "run tip", height=70)
    narrow = TextRunBar(Source(corpus, 16), "placeholder", "tip", "run tip", height=70)
    qtbot.addWidget(wide)
    qtbot.addWidget(narrow)
    assert len(wide.text.toPlainText()) > 16  # a char model reads one token per character
    assert 0 < len(narrow.text.toPlainText()) <= 16


class Numbered(TokenTextView):
    def token_format(self, k: int) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setFontUnderline(k % 2 == 1)
        return fmt

    def token_tooltip(self, k: int) -> str:
        return f"token {k}"


def test_token_text_view_maps_a_click_to_its_token(qtbot):
    view = Numbered()
    qtbot.addWidget(view)
    view.resize(400, 200)
    view.show()
    view.pieces = ["ab", "cd", "\n", "ef"]
    view.render_tokens()
    assert view.toPlainText() == "abcd\u21b5\nef"  # a newline token is shown as a mark, then a break
    for k, start in enumerate(view._starts):
        cursor = QTextCursor(view.document())
        cursor.setPosition(start + 1)
        assert cursor.charFormat().fontUnderline() == (k % 2 == 1)
        rect = view.cursorRect(cursor)
        point = QPoint(rect.x() - 2, rect.center().y())  # just left of the gap: inside token k
        with qtbot.waitSignal(view.token_clicked, timeout=1000) as blocker:
            qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
        assert blocker.args == [k]
        assert view.token_at(point) == k and view.token_tooltip(k) == f"token {k}"


@pytest.mark.parametrize("text", ["a\nb", "tab\there", "plain", "\n\t"])
def test_text_of_rendered_undoes_render_tokens_escapes(text):
    tok = CharTokenizer.from_text(text)
    rendered = "".join(tok.render_token(i) for i in tok.encode(text))
    assert text_of_rendered(rendered) == text
