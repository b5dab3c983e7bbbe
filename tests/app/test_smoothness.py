"""The window stays responsive on a real-size model: a 10 ms timer measures how long the GUI thread
leaves its event loop while tabs are switched, the attention of a long text is drawn, and 50 KB are
pasted and typed after in the Tokenizer tab (a GPT of 8 layers x 512 and a 4096-token BPE).

The bound is 100 ms on a quiet machine; the test allows 250 ms because it shares two cores with
other work, and gives an action that stalled a second attempt (see `measured`). Run with -s to see the
measured gaps.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch
from PySide6.QtTest import QTest

from app.launcher import freeze_startup_objects
from app.main_window import MainWindow
from app.tools.event_gaps import GapProbe, spin, spin_until
from engine.config import ModelConfig
from engine.data import load_corpus
from engine.model import GPT
from engine.tokenizers import train_bpe

MAX_GAP_MS = 250.0
PASTE_CHARS = 50_000






@pytest.fixture(scope="module")
def corpus():
    return load_corpus("python-docs")


@pytest.fixture(scope="module")
def setup(qapp, corpus):
    os.environ["LLM_PLAYGROUND_SETTINGS"] = str(Path(tempfile.mkdtemp()) / "settings.ini")
    tokenizer = train_bpe(corpus.documents, 4096, pattern="gpt2", name="bpe-4096")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=512, emb_dim=512, n_heads=8, n_layers=8,
                         drop_rate=0.0)
    model = GPT(config).eval()
    window = MainWindow(load_default=False)
    freeze_startup_objects()  # as the launcher does
    window.resize(1280, 720)
    window.show()
    spin(0.3)
    window.state.set_model(model, tokenizer)
    spin_until(lambda: not window.runner.running())
    yield window
    window._closing = True
    window.close()
    window.runner.stop_all(10000)


def measured(name: str, action, done=lambda: True, settle: float = 0.3, again=None) -> float:
    """The longest event-loop gap while `action` runs and until `done()`.

    When it stalls and `again` is given (it undoes the action, unmeasured), the action gets a second
    attempt and the better one counts: work on the GUI thread stalls every time, a machine busy with
    other programs only sometimes. Both attempts are printed.
    """
    best = float("inf")
    for attempt in range(2 if again is not None else 1):
        if attempt:
            again()
            spin_until(done)
            spin(settle)
        probe = GapProbe().start()
        action()
        spin(0.05)
        spin_until(done)
        spin(settle)
        probe.stop()
        print(f"{name}{' (second attempt)' if attempt else ''}: event-loop gap {probe.summary()}")
        best = min(best, probe.max_ms)
        if best < MAX_GAP_MS:
            break
    return best


def idle(window) -> bool:
    return not window.runner.running()


@pytest.mark.slow
def test_tab_switches_big_attention_and_pasting_keep_the_window_responsive(setup, corpus):
    window = setup
    attention = window.attention_tab
    tokenizer_tab = window.tokenizer_tab
    gaps = {}
    def settled():
        return idle(window) and not tokenizer_tab.busy and not attention.busy

    for index, title in ((1, "Attention"), (2, "Tokenizer"), (3, "Generation")):
        gaps[f"switch to {title}"] = measured(f"switch to {title}", lambda i=index: window.tabs.setCurrentIndex(i),
                                              settled, again=lambda: window.tabs.setCurrentIndex(0))
    assert attention._shown is not None  # the automatic run happened

    window.tabs.setCurrentIndex(1)
    spin_until(lambda: idle(window))
    text = corpus.text()[:4000]  # more than the 512-token context: a 512 x 512 map, 8 x 8 heads

    def run_long_text():
        attention.text.setPlainText(text)
        attention.run()

    gaps["attention of 512 tokens"] = measured("attention of 512 tokens", run_long_text, settled,
                                               again=lambda: attention.text.setPlainText("again"))
    assert attention.heatmap.matrix.shape == (512, 512)

    window.tabs.setCurrentIndex(2)
    spin_until(lambda: idle(window) and not tokenizer_tab.busy)
    paste = (corpus.text() * 2)[:PASTE_CHARS]
    gaps["paste 50 KB"] = measured("paste 50 KB", lambda: tokenizer_tab.text.setPlainText(paste), settled,
                                   settle=0.5, again=lambda: tokenizer_tab.text.setPlainText("short"))
    assert tokenizer_tab.panels["model"].data.num_chars == PASTE_CHARS

    def type_after():
        tokenizer_tab.text.moveCursor(tokenizer_tab.text.textCursor().MoveOperation.End)
        for ch in "hello":
            QTest.keyClick(tokenizer_tab.text, ch)
            spin(0.06)

    gaps["typing after the paste"] = measured("typing after the paste", type_after, settled, settle=0.5,
                                              again=lambda: tokenizer_tab.text.setPlainText(paste))
    assert tokenizer_tab.panels["model"].data.text.endswith("hello")
    slow = {k: round(v) for k, v in gaps.items() if v >= MAX_GAP_MS}
    assert not slow, f"the window stalled: {slow} (ms)"


def test_merges_of_a_big_vocabulary_are_listed_off_the_gui_thread(setup):
    """Listing 4,000 merges on the GUI thread would freeze the window for a second (50,000: several): a job does it."""
    window = setup
    panel = window.tokenizer_tab.merges_panel
    window.tabs.setCurrentIndex(2)
    spin_until(lambda: idle(window))
    panel._merge_rows.clear()
    index = next(i for i, (_, tok) in enumerate(panel._merge_items) if tok is window.state.tokenizer)
    probe = GapProbe().start()
    panel.merges_of.setCurrentIndex(index)
    panel._show_merges()
    assert panel.merges.model.total() == 0 and "Listing" in panel.merges.count.text()  # not listed inline
    spin_until(lambda: panel.merges.model.total() > 0)
    probe.stop()
    assert panel.merges.model.total() > 3000
    assert probe.max_ms < MAX_GAP_MS
    panel.merges.filter.setText("the")
    panel.merges.apply_filter()
    assert 0 < panel.merges.shown_count() < panel.merges.model.total()
