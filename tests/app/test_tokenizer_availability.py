"""Offline, the Training tab shows the named encodings it cannot download disabled, with the engine's reason,
and Start says why before it is pressed (no network in tests: the download host is a dead 127.0.0.1 port)."""
from __future__ import annotations

import dataclasses
import os
import socket

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QStandardItemModel  # noqa: E402

from app.state import AppState  # noqa: E402
from app.tabs.training.tab import TrainingTab  # noqa: E402
from app.worker import JobRunner  # noqa: E402
from engine.tokenizers import named  # noqa: E402


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache, and every named encoding's files at a port where nothing listens."""
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "empty-cache"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    specs = {name: dataclasses.replace(spec, files=tuple((f"{dead}/{name}/{i}", sha)
                                                         for i, (_, sha) in enumerate(spec.files)))
             for name, spec in named.NAMED_ENCODINGS.items()}
    monkeypatch.setattr(named, "NAMED_ENCODINGS", specs)
    named._forget_named_encodings()
    yield
    named._forget_named_encodings()


def _enabled(combo, data: str) -> bool:
    model = combo.model()
    assert isinstance(model, QStandardItemModel)
    return model.item(combo.findData(data)).isEnabled()


def test_offline_named_encodings_are_disabled_with_the_reason_before_start(qtbot, offline):
    runner = JobRunner()
    tab = TrainingTab(AppState(), runner)
    qtbot.addWidget(tab)
    panel = tab.data_panel
    combo = panel.tokenizer_combo
    qtbot.waitUntil(lambda: panel.corpus_ready, timeout=20000)
    assert tab.controls.start_button.isEnabled(), tab.start_problem()
    assert _enabled(combo, "gpt2")  # not known to be unavailable until asked
    combo.setCurrentIndex(combo.findData("gpt2"))
    qtbot.waitUntil(lambda: panel.tokenizer_unavailable("gpt2") is not None, timeout=10000)
    reason = panel.tokenizer_unavailable("gpt2")
    assert reason.startswith("gpt2: not in the cache and the network is unreachable") and "refused" in reason
    # shown before Start: the item is disabled with the reason, the line under it says it, Start is off
    for name in named.NAMED_ENCODINGS:  # the one answer covers the others (none is cached)
        assert not _enabled(combo, name), name
        assert combo.itemData(combo.findData(name), Qt.ItemDataRole.ToolTipRole).startswith(f"{name}: not in the cache")
        assert combo.itemText(combo.findData(name)).endswith("unavailable")
    assert _enabled(combo, "char") and _enabled(combo, "bpe:1024")
    assert panel.tokenizer_info.text() == f"unavailable: {reason}"
    assert not tab.controls.start_button.isEnabled()
    assert tab.start_problem() == f"the tokenizer {reason}"
    assert tab.controls.start_button.toolTip() == f"Cannot start: the tokenizer {reason}"
    # choosing a tokenizer that works makes Start possible again
    combo.setCurrentIndex(combo.findData("char"))
    assert tab.controls.start_button.isEnabled() and tab.start_problem() is None
    runner.stop_all(5000)
