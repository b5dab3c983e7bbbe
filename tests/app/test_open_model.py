"""File ▸ Open model…: the dialog lists the Hugging Face cache and downloads through a local hub server
(tests/engine/hub_server.py); the window opens a model folder (menu, dialog or drop) in a job."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch
from hf_fixtures import gpt2_folder
from hub_server import FakeHub, hub_environment, model_files
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QDialog, QMessageBox

from app.main_window import MainWindow
from app.open_model_dialog import OpenModelDialog
from app.worker import JobRunner
from engine.hub import download_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def hub(monkeypatch, tmp_path, folder):
    """A local hub with a GPT-2 (opens here) and a repo of a family this version can't run, an empty cache."""
    server = FakeHub()
    server.add("tiny/gpt2", {p.name: p.read_bytes() for p in folder.iterdir()})
    server.add("tiny/mamba", model_files())
    hub_environment(monkeypatch, server, tmp_path / "hub")
    yield server
    server.close()


@pytest.fixture
def dialog(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    # GGUF files are looked for in LM Studio's and Ollama's folders under HOME: an empty home of its own.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv("LLM_PLAYGROUND_GGUF_DIRS", raising=False)
    runner = JobRunner()
    made = []

    def make() -> OpenModelDialog:
        d = OpenModelDialog(runner)
        qtbot.addWidget(d)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cancel_download()
    runner.stop_all(5000)


def rows(d: OpenModelDialog) -> list[tuple[str, ...]]:
    return [tuple(d.table.item(r, c).text() for c in range(d.table.columnCount())) for r in range(d.table.rowCount())]


def test_lists_the_cache_and_only_supported_models_open(qtbot, hub, dialog, folder):
    download_model("tiny/gpt2", token=False)
    download_model("tiny/mamba", token=False)
    d = dialog()
    qtbot.waitUntil(lambda: d.table.rowCount() == 2, timeout=10000)
    params = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).num_parameters()
    table = rows(d)
    assert [r[:2] for r in table] == [("tiny/gpt2", "gpt2"), ("tiny/mamba", "mamba")]
    assert table[0][2] == f"{params / 1e3:.1f} K" and table[0][3].endswith("KB")
    assert "2 models" in d.list_status.text()
    d.table.selectRow(1)
    assert not d.open_button.isEnabled()  # mamba: not yet
    assert not d.table.item(1, 0).flags() & Qt.ItemFlag.ItemIsEnabled
    assert "can't be opened" in d.table.item(1, 0).toolTip()
    d.table.selectRow(0)
    assert d.open_button.isEnabled()
    d.open_button.click()
    assert d.result() == QDialog.DialogCode.Accepted and d.chosen_name == "tiny/gpt2"
    assert (d.chosen / "config.json").is_file()


def test_empty_cache_says_what_to_do(qtbot, hub, dialog):
    d = dialog()
    qtbot.waitUntil(lambda: "No models" in d.list_status.text(), timeout=10000)
    assert d.table.rowCount() == 0 and not d.open_button.isEnabled()
    assert not d.download_button.isEnabled()  # no repo id yet


def test_download_shows_progress_then_lists_and_selects(qtbot, hub, dialog):
    hub.slow["model.safetensors"] = 0.3
    d = dialog()
    qtbot.waitUntil(lambda: "No models" in d.list_status.text(), timeout=10000)
    d.repo.setText("tiny/gpt2")
    d.download_button.click()
    assert d.is_downloading() and d.cancel_button.isEnabled() and not d.download_button.isEnabled()
    seen = []
    qtbot.waitUntil(lambda: seen.append(d.progress.value()) or d.table.rowCount() == 1, timeout=20000)
    assert d.progress.value() == 1000 and "Downloaded tiny/gpt2" in d.download_status.text()
    assert any(0 <= v < 1000 for v in seen)  # it moved through the files
    assert d.selected_entry().name == "tiny/gpt2" and d.open_button.isEnabled()
    assert not d.is_downloading() and not d.cancel_button.isEnabled()


def test_cancel_and_errors_are_one_line(qtbot, hub, dialog, monkeypatch):
    hub.slow["model.safetensors"] = 1.0
    d = dialog()
    d.repo.setText("tiny/gpt2")
    d.download_button.click()
    qtbot.waitUntil(lambda: "model.safetensors" in d.download_status.text(), timeout=10000)
    d.cancel_button.click()
    qtbot.waitUntil(lambda: not d.is_downloading(), timeout=10000)
    assert "cancelled" in d.download_status.text() and "\n" not in d.download_status.text()
    d.refresh()
    qtbot.waitUntil(lambda: "No models" in d.list_status.text(), timeout=10000)  # nothing half-written listed

    d.repo.setText("nobody/nothing")
    d.download_button.click()
    qtbot.waitUntil(lambda: not d.is_downloading(), timeout=10000)
    assert "nobody/nothing was not found" in d.download_status.text()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    d.download_button.click()
    qtbot.waitUntil(lambda: not d.is_downloading(), timeout=10000)
    assert time.monotonic() - start < 3.0 and "offline" in d.download_status.text()


@pytest.fixture
def window(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    errors = []
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda parent, title, text, *a: errors.append(text)))
    w = MainWindow(load_default=False)
    w.errors = errors
    qtbot.addWidget(w)
    yield w
    w.runner.stop_all(10000)


def test_window_opens_a_folder_in_a_job(qtbot, window, folder):
    window.open_model(folder)
    assert window.state.model is None  # the weights load in a job, not on the GUI thread
    qtbot.waitUntil(lambda: window.state.model is not None, timeout=30000)
    assert not window.errors
    model = window.state.model
    reference = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    idx = torch.arange(30).unsqueeze(0)
    with torch.no_grad():
        assert (model(idx)[0] - reference(idx).logits).abs().max().item() <= 1e-4
    assert window.state.display_name == folder.name and not window.state.dirty
    assert window.state.tokenizer.chat_template  # the tokenizer.json tokenizer, with its template


def test_dropping_a_model_folder_opens_it_and_bad_folders_say_why(qtbot, window, folder, tmp_path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    window.dropEvent(QDropEvent(QPointF(window.rect().center()), Qt.DropAction.CopyAction, mime,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: window.state.model is not None, timeout=30000)
    assert window.state.source_name == folder.name

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "mamba"}')
    window.open_model(bad)
    qtbot.waitUntil(lambda: bool(window.errors), timeout=20000)
    assert "unsupported model_type 'mamba' (supported: gpt2, llama, mistral, qwen2)" in window.errors[0]
    assert "\n" not in window.errors[0] and window.state.source_name == folder.name  # the model stays


def test_open_model_menu_runs_the_dialog(qtbot, window, hub, folder, monkeypatch):
    download_model("tiny/gpt2", token=False)

    def fake_exec(self):
        qtbot.waitUntil(lambda: self.table.rowCount() == 1, timeout=10000)
        self.table.selectRow(0)
        self.open_selected()
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(OpenModelDialog, "exec", fake_exec)
    window.open_model_action.trigger()
    qtbot.waitUntil(lambda: window.state.model is not None, timeout=30000)
    assert window.state.display_name == "tiny/gpt2" and not window.errors


def test_gguf_files_of_lm_studio_and_added_folders_are_listed_and_open(qtbot, hub, dialog, tmp_path, monkeypatch):
    gguf_fixtures = pytest.importorskip("gguf_fixtures")
    bpe = gguf_fixtures.train_bpe()
    lms = tmp_path / "home" / ".lmstudio" / "models" / "someone" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    gguf_fixtures.gpt2_file(lms / "tiny-q8_0.gguf", gguf_fixtures.tiny_gpt2(len(bpe["tokens"])), bpe,
                            types=lambda name, x: gguf_fixtures.Q.Q8_0)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "copy.gguf").write_bytes((lms / "tiny-q8_0.gguf").read_bytes() + b"\0" * 32)
    download_model("tiny/gpt2", token=False)
    d = dialog()
    qtbot.waitUntil(lambda: d.table.rowCount() == 2, timeout=10000)
    assert [r[0] for r in rows(d)] == ["tiny/gpt2", "someone/Tiny-GGUF/tiny-q8_0.gguf"]
    assert rows(d)[1][1] == "gpt2" and rows(d)[1][4] == "LM Studio · Q8_0" and rows(d)[0][4] == "HF cache"
    assert "1 in the Hugging Face cache, 1 GGUF file" in d.list_status.text()

    monkeypatch.setattr("app.dialogs.open_folder", lambda *a: str(mine))
    d.gguf_button.click()
    qtbot.waitUntil(lambda: d.table.rowCount() == 3, timeout=10000)
    assert rows(d)[1][0] == str(mine / "copy.gguf") and rows(d)[1][4] == "folder · Q8_0"  # GGUF files by name
    again = dialog()  # the added folder is remembered
    qtbot.waitUntil(lambda: again.table.rowCount() == 3, timeout=10000)
    again.table.selectRow(2)
    again.open_selected()
    assert again.result() == QDialog.DialogCode.Accepted and again.chosen == lms / "tiny-q8_0.gguf"
