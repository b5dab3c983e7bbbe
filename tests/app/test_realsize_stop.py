"""A moderately sized model (8 layers x 512) in the app: open it, switch to every tab, paste 50 KB, start
fine-tuning and Stop. A 10 ms timer measures how long the GUI thread leaves its event loop meanwhile, and
Stop must end the run within 1 s (the current micro-batch may finish; no last evaluation or sample).

The gap bound is 100 ms on a quiet machine; the test allows 250 ms because it shares two cores with other
work, and gives an action that stalled a second attempt (as tests/app/test_smoothness.py). Run with -s to
see the measured figures.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from app.launcher import freeze_startup_objects
from app.main_window import MainWindow
from app.tools.event_gaps import GapProbe, spin, spin_until
from engine import EvalEvent, SampleEvent, StepEvent
from engine.checkpoint import save_checkpoint
from engine.config import ModelConfig
from engine.data import load_corpus
from engine.model import GPT
from engine.tokenizers import CharTokenizer

MAX_GAP_MS = 250.0
STOP_S = 1.0
PASTE_CHARS = 50_000






@pytest.fixture(scope="module")
def window(qapp):
    os.environ["LLM_PLAYGROUND_SETTINGS"] = str(Path(tempfile.mkdtemp()) / "settings.ini")
    window = MainWindow(load_default=False)
    freeze_startup_objects()  # as the launcher does
    window.resize(1280, 720)
    window.show()
    spin(0.3)
    yield window
    window._closing = True
    window.close()
    window.runner.stop_all(10000)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    corpus = load_corpus("copy")
    tokenizer = CharTokenizer.from_text(corpus.text())
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=64, emb_dim=512, n_heads=8, n_layers=8,
                         drop_rate=0.0)
    path = tmp_path_factory.mktemp("realsize") / "moderate.safetensors"
    save_checkpoint(path, GPT(config).eval(), tokenizer)
    return path


def settled(window) -> bool:
    return not window.runner.running() and not window.tokenizer_tab.busy and not window.attention_tab.busy \
        and not window.inside_tab.busy


def measured(name: str, window, action, done, again=None) -> float:
    """The longest event-loop gap while `action` runs and until `done()` (then 0.3 s more); an action that
    stalled gets a second attempt after `again` (unmeasured), and the better one counts."""
    best = float("inf")
    for attempt in range(2 if again is not None else 1):
        if attempt:
            again()
            spin_until(lambda: settled(window))
        probe = GapProbe().start()
        action()
        spin_until(done)
        spin(0.3)
        probe.stop()
        print(f"{name}{' (second attempt)' if attempt else ''}: event-loop gap {probe.summary()}")
        best = min(best, probe.max_ms)
        if best < MAX_GAP_MS:
            break
    return best


@pytest.mark.slow
def test_open_tabs_paste_start_and_stop_keep_the_window_responsive(window, checkpoint):
    gaps = {}
    gaps["open"] = measured("open", window, lambda: window.open_checkpoint(checkpoint),
                            lambda: window.state.checkpoint_path == checkpoint and settled(window),
                            again=lambda: window.tabs.setCurrentIndex(0))
    for index in range(1, window.tabs.count()):
        title = window.tabs.tabText(index)
        gaps[f"switch to {title}"] = measured(f"switch to {title}", window,
                                              lambda i=index: window.tabs.setCurrentIndex(i),
                                              lambda: settled(window), again=lambda: window.tabs.setCurrentIndex(0))
    tok = window.tokenizer_tab
    window.tabs.setCurrentWidget(tok)
    spin_until(lambda: settled(window))
    paste = (load_corpus("python-docs").text() * 2)[:PASTE_CHARS]
    gaps["paste 50 KB"] = measured("paste 50 KB", window, lambda: tok.text.setPlainText(paste),
                                   lambda: settled(window), again=lambda: tok.text.setPlainText("short"))

    tab = window.training_tab
    window.tabs.setCurrentWidget(tab)
    tab.model_panel.finetune_radio.setChecked(True)
    # micro-batches of 64 tokens, four to a step: Stop lands inside a step and drops it
    tab.train_form.set_values(dict(tab.train_form.values(), steps=10_000, batch_size=1, grad_accum=4,
                                   eval_interval=10_000, device="cpu", precision="fp32", compile=False))
    tab.data_panel.select_corpus("copy")
    spin_until(lambda: tab.data_panel.corpus_ready and tab.start_problem() is None)
    assert "Training memory ≈" in tab.model_panel.training_memory_label.text()
    events = []

    def start():
        job = tab.start()
        job.events.connect(events.extend)

    gaps["start"] = measured("start", window, start, lambda: any(isinstance(e, StepEvent) for e in events))
    spin(0.5)
    steps_before = [e.step for e in events if isinstance(e, StepEvent)]
    seen = len(events)
    clicked = time.perf_counter()
    stop_s = []

    def stop():
        tab.controls.stop_button.click()

    def stopped() -> bool:
        if not tab.is_running and not stop_s:
            stop_s.append(time.perf_counter() - clicked)
        return bool(stop_s) and settled(window)

    gaps["stop and the end of the run"] = measured("stop", window, stop, stopped)
    print(f"Stop took {stop_s[0]:.2f} s")
    assert stop_s[0] <= STOP_S, f"Stop took {stop_s[0]:.2f} s"
    after = [e for e in events[seen:] if isinstance(e, (EvalEvent, SampleEvent))]
    assert not after, "no evaluation or sample after Stop"
    last_step = max(e.step for e in events if isinstance(e, StepEvent))
    assert last_step >= max(steps_before) and window.state.train_state["step"] == last_step  # the run kept its state
    slow = {k: round(v) for k, v in gaps.items() if v >= MAX_GAP_MS}
    assert not slow, f"the window stalled: {slow} (ms)"
