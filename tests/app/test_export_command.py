"""The Training tab's Export command runs as given: saved to a folder with the app's own tokenizer next to it,
the script is run for real (torchrun, one CPU process, a tiny model, a few steps) and must train and save."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.tabs.training.command_dialog import TorchrunDialog  # noqa: E402
from engine import PRESETS, TrainConfig, load_checkpoint  # noqa: E402
from engine.tokenizers import train_bpe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = PRESETS["tiny"].with_changes(context_length=16, n_layers=2, emb_dim=32, vocab_size=300)
TRAIN = TrainConfig(steps=3, batch_size=2, warmup_steps=1, eval_interval=3, sample_interval=0, device="cpu")
TEXT = "the cat sat on the mat; the dog sat on the log. " * 40


def _run(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["sh", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_exported_command_runs_as_given(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a: pytest.fail(f"error dialog: {a[2]}")))
    tokenizer = train_bpe(TEXT, 300)  # the Tokenizer tab's: only the app has it
    corpus = tmp_path / "my corpus.txt"  # a space: the line must quote it
    corpus.write_text(TEXT * 5)
    dialog = TorchrunDialog(MODEL, TRAIN, str(corpus), tokenizer, None)
    qtbot.addWidget(dialog)
    dialog.nproc.setValue(1)
    assert "--tokenizer tokenizer.json" in dialog.command and "tokenizer.json" in dialog.note.text()
    folder = tmp_path / "export"
    monkeypatch.setattr("app.dialogs.open_folder", lambda *a: str(folder))
    dialog.save_button.click()
    assert (folder / "train.sh").is_file() and (folder / "tokenizer.json").is_file()
    words = shlex.split(dialog.command)  # the line now names the saved file
    assert words[words.index("--tokenizer") + 1] == str(folder / "tokenizer.json")
    assert str(folder) in dialog.note.text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _run(folder / "train.sh", elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(folder / "model.safetensors")  # --out lands beside the script
    assert checkpoint.train_state["step"] == 3 and checkpoint.train_state["corpus"] == str(corpus)
    assert checkpoint.model.config.n_layers == 2 and checkpoint.model.config.emb_dim == 32
    assert checkpoint.tokenizer.encode(TEXT[:200]) == tokenizer.encode(TEXT[:200])  # the app's tokenizer, not another

    # the line shown in the dialog runs as it is too, from anywhere
    copied = tmp_path / "copied.sh"
    copied.write_text(dialog.command + "\n")
    done = _run(copied, elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "model.safetensors").is_file()


def test_a_named_spec_needs_no_files_and_an_unsaved_model_is_refused(qtbot, tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a: errors.append(a[2])))
    dialog = TorchrunDialog(MODEL, TRAIN, "copy", "char", None)
    qtbot.addWidget(dialog)
    assert "runs as it is" in dialog.note.text()
    script = dialog.save_to(tmp_path / "a")
    assert sorted(p.name for p in script.parent.iterdir()) == ["train.sh"]
    assert "--tokenizer char" in script.read_text() and os.access(script, os.X_OK)
    refused = TorchrunDialog(MODEL, TRAIN, "copy", None, "MODEL.safetensors",
                             problem="save the model first (Ctrl+S): the command fine-tunes from its checkpoint file")
    qtbot.addWidget(refused)
    assert not refused.copy_button.isEnabled() and not refused.save_button.isEnabled()
    assert refused.note.text().startswith("Cannot export yet: save the model first")
    # a checkpoint that is not there is a one-line error, and nothing is written
    missing = TorchrunDialog(MODEL, TRAIN, "copy", None, str(tmp_path / "gone.safetensors"))
    qtbot.addWidget(missing)
    assert missing.save_to(tmp_path / "b") is None
    assert errors and "is not a file" in errors[-1] and not (tmp_path / "b").exists()
