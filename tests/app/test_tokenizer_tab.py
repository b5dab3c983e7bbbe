"""The Tokenizer tab: exact spans for every encoding, hover/selection, BPE training and cancel, reasons."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import html
import random

import pytest
from PySide6.QtCore import Qt

from app.state import AppState
from app.tabs.tokenizer import jobs as tokenizer_jobs_module
from app.tabs.tokenizer.tab import NAMED_SHOWN, TokenizerTab
from app.tabs.tokenizer.tokenized import tokenize_for_display
from app.worker import JobRunner
from engine.config import ModelConfig
from engine.data import Corpus
from engine.model import GPT
from engine.tokenizers import BPETrainedEvent, CharTokenizer, merges_table, train_bpe

TEXTS = [
    "",
    "a",
    "Hello, world! The tokenizer splits text.",
    "日本語のテキスト 🙂👍🏽 naïve café",
    "  leading spaces\n\n\ttabs\r\nand trailing   \n",
    "<|endoftext|> is plain text here",
]
CORPUS_TEXT = ("the quick brown fox jumps over the lazy dog. " * 40 + "日本語 🙂 café\n") * 5


@pytest.fixture(scope="module")
def small_bpe():
    return train_bpe(CORPUS_TEXT, 300, name="bpe-test")


@pytest.fixture
def named(monkeypatch, small_bpe):
    """Named encodings without the network: one "loads", the others are unavailable with a reason."""
    status = [("gpt2", small_bpe, None),
              ("cl100k_base", None, "cl100k_base: not in the cache and the network is unreachable"),
              ("o200k_base", None, "o200k_base: offline for this test")]
    monkeypatch.setattr(tokenizer_jobs_module, "named_encoding_status", lambda *a, **k: list(status))
    return status


@pytest.fixture
def runner():
    runner = JobRunner()
    yield runner
    assert runner.stop_all(10_000)


@pytest.fixture
def tab(qtbot, runner, named, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "cache"))
    state = AppState()
    state.set_corpus(Corpus("small", [CORPUS_TEXT], source="small"))
    tab = TokenizerTab(state, runner)
    qtbot.addWidget(tab)
    tab.resize(1300, 900)
    tab.show()
    qtbot.waitUntil(lambda: tab.named_loaded and not tab.busy, timeout=10_000)
    return tab


def refresh(qtbot, tab):
    """Re-tokenize now and wait until every row shows the new spans (tokenizing runs in a job)."""
    tab.refresh()
    qtbot.waitUntil(lambda: not tab.busy, timeout=20_000)


def available_panels(tab):
    return {row.name: tab.panels[row.key] for row in tab.encodings() if row.tokenizer is not None}


@pytest.mark.parametrize("text", TEXTS)
def test_spans_rejoin_into_the_exact_text_for_every_encoding(qtbot, tab, text):
    tab.text.setPlainText(text)
    refresh(qtbot, tab)
    typed = tab.text.toPlainText()  # the text box keeps line ends as "\n"
    panels = available_panels(tab)
    assert {"char", "gpt2"} <= set(panels)
    for name, panel in panels.items():
        data = panel.data
        assert "".join(data.span_text(s) for s in data.spans) == typed, name
        assert [k for s in data.spans for k in s.tokens] == list(range(len(data.ids))), name
        assert panel.spans.toPlainText() == typed, name
        assert data.num_chars == len(typed) and data.num_bytes == len(typed.encode("utf-8"))
        assert panel.ids.count() == len(data.ids)
        # the same holds for the raw text, "\r\n" included
        raw = tokenize_for_display(tab.encodings()[[r.name for r in tab.encodings()].index(name)].tokenizer, text)
        assert "".join(raw.span_text(s) for s in raw.spans) == text, name


def test_char_encoding_marks_characters_the_corpus_lacks(qtbot, tab):
    tab.text.setPlainText("fox ✓")
    refresh(qtbot, tab)
    data = tab.panel("char").data
    assert data.ids[-1] == 0 and data.unknown == 1
    assert "".join(data.span_text(s) for s in data.spans) == "fox ✓"


def test_whitespace_toggle_shows_spaces_and_newlines(qtbot, tab):
    tab.text.setPlainText("a b\nc")
    tab.show_ws.setChecked(True)
    refresh(qtbot, tab)
    shown = tab.panel("gpt2").spans.toPlainText()
    assert "·" in shown and "↵" in shown
    assert "".join(tab.panel("gpt2").data.span_text(s) for s in tab.panel("gpt2").data.spans) == "a b\nc"


def test_a_split_character_is_one_span_with_all_its_tokens(small_bpe):
    data = tokenize_for_display(small_bpe, "x👍🏽y")
    emoji_spans = [s for s in data.spans if len(s.tokens) > 1]
    assert emoji_spans, "byte-level BPE splits a rare emoji into several tokens"
    assert "".join(data.span_text(s) for s in data.spans) == "x👍🏽y"


def test_hover_info_and_selecting_an_id_highlights_its_span(qtbot, tab):
    tab.text.setPlainText("the quick brown fox")
    refresh(qtbot, tab)
    panel = tab.panel("gpt2")
    data = panel.data
    k = 2
    info = data.token_info(k)
    assert f"id {data.ids[k]}" in info
    assert " ".join(f"{b:02x}" for b in data.token_bytes[k]) in info
    assert html.escape(info) in panel.spans.span_tooltip(data.span_of_token(k))
    panel.ids.setCurrentRow(k)
    selections = panel.spans.extraSelections()
    assert len(selections) == 1
    span = data.spans[data.span_of_token(k)]
    assert selections[0].cursor.selectedText() == data.span_text(span)
    assert panel.hover.text() == info


def test_clicking_a_span_selects_its_id(qtbot, tab):
    tab.text.setPlainText("the quick brown fox")
    refresh(qtbot, tab)
    panel = tab.panel("gpt2")
    view = panel.spans
    n = 1
    cursor = view.textCursor()
    cursor.setPosition(view._doc_starts[n] + 1)
    point = view.cursorRect(cursor).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert panel.ids.currentRow() == panel.data.spans[n].tokens[0]


def test_unavailable_encodings_show_their_reason(tab, named):
    for name, tok, reason in named:
        panel = tab.panel(name)
        if tok is None:
            assert panel.data is None
            assert reason in panel.reason_text
            assert panel.reason.isVisible() and not panel.ids.isVisible()
        else:
            assert panel.data is not None and panel.reason_text == ""
    assert [r.name for r in tab.encodings() if r.key.startswith("named:")] == list(NAMED_SHOWN)
    # where merges are offered, the unavailable encodings are listed disabled, with the reason
    items = tab.merges_panel.merges_of.model()
    offered = {tab.merges_panel.merges_of.itemText(i): items.item(i) for i in range(tab.merges_panel.merges_of.count())}
    for name, tok, reason in named:
        if tok is None:
            item = offered[f"{name} (unavailable)"]
            assert not item.isEnabled() and reason in item.toolTip()
        else:
            assert offered[name].isEnabled()


def test_a_failing_loader_is_a_reason_not_a_crash(qtbot, runner, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise OSError("cache folder is read-only")

    monkeypatch.setattr(tokenizer_jobs_module, "named_encoding_status", boom)
    tab = TokenizerTab(AppState(), runner)
    qtbot.addWidget(tab)
    tab.show()
    qtbot.waitUntil(lambda: tab.named_loaded,
                    timeout=10_000)
    assert all("read-only" in tab.panel(n).reason_text for n in NAMED_SHOWN)


def big_corpus() -> Corpus:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]
    docs = [" ".join(rng.choice(words) for _ in range(200_000)) for _ in range(4)]  # ~ 4 x 1.2 M characters
    return Corpus("big", docs, source="big")


def test_bpe_training_can_be_cancelled(qtbot, tab):
    tab.state.set_corpus(big_corpus())
    tab.bpe.corpus_combo.setCurrentIndex(0)  # the current corpus
    tab.bpe.vocab_size.setValue(4096)
    progress = []
    tab.bpe.train()
    tab.bpe.job.events.connect(progress.extend)
    assert tab.bpe.training and not tab.bpe.train_button.isEnabled() and tab.bpe.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: bool(progress), timeout=10_000)
    tab.bpe.cancel()
    qtbot.waitUntil(lambda: not tab.bpe.training, timeout=20_000)
    assert tab.trained == []
    assert not any(isinstance(e, BPETrainedEvent) for e in progress)
    assert tab.bpe.train_button.isEnabled() and not tab.bpe.cancel_button.isEnabled() and tab.bpe.vocab_size.isEnabled()
    assert "Cancelled" in tab.bpe.status.text()
    assert all(not r.key.startswith("trained:") for r in tab.encodings())


def test_bpe_trained_here_is_usable_listed_and_handed_over(qtbot, tab):
    tab.bpe.corpus_combo.setCurrentIndex(0)
    tab.bpe.vocab_size.setValue(320)
    tab.bpe.pattern.setCurrentIndex(tab.bpe.pattern.findData("cl100k"))
    tab.bpe.train()
    qtbot.waitUntil(lambda: not tab.bpe.training, timeout=30_000)
    assert len(tab.trained) == 1
    tok = tab.trained[0]
    assert tok.vocab_size <= 320
    text = "the lazy fox 🙂 日本語"
    assert tok.decode(tok.encode(text)) == text
    # listed among the encodings, with exact spans
    tab.text.setPlainText(text)
    refresh(qtbot, tab)
    panel = tab.panel(tok.name)
    assert panel is not None and panel.data.ids == tok.encode(text)
    assert "".join(panel.data.span_text(s) for s in panel.data.spans) == text
    # its merges, searchable
    assert tab.merges_panel.merges_tokenizer() is tok
    qtbot.waitUntil(lambda: tab.merges_panel.merges.model.total() > 0, timeout=10_000)  # listed in a job
    assert tab.merges_panel.merges.model.rowCount() == len(merges_table(tok)) > 0
    tab.merges_panel.merges.filter.setText("the")
    tab.merges_panel.merges.apply_filter()
    assert 0 < tab.merges_panel.merges.shown_count() < tab.merges_panel.merges.model.total()
    # handed to the Training tab
    assert tab.merges_panel.use_button.isEnabled()
    tab.merges_panel.use_button.click()
    assert tab.state.pending_tokenizer is tok


def test_bytes_per_token_chart_covers_every_available_encoding(qtbot, tab):
    tab.update_chart()
    qtbot.waitUntil(lambda: not tab.chart_measuring and len(tab.chart.values) >= 2, timeout=10_000)
    values = dict(tab.chart.values)
    available = [r.name for r in tab.encodings() if r.tokenizer is not None]
    assert list(values) == available
    sample = CORPUS_TEXT
    assert values["char"] == pytest.approx(len(sample.encode()) / len(sample))
    assert values["gpt2"] > values["char"]  # a BPE packs several bytes into a token


def test_model_tokenizer_is_listed(qtbot, tab, small_bpe):
    tok = CharTokenizer.from_text("abc ")

    tab.state.set_model(GPT(ModelConfig(vocab_size=tok.vocab_size, context_length=8, emb_dim=8, n_heads=1,
                                        n_layers=1)), tok)
    qtbot.waitUntil(lambda: not tab.busy, timeout=20_000)
    assert tab.panels["model"].data is not None
    assert "model" in tab.panels["model"].title.text()
