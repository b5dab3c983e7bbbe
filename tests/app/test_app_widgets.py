"""The Training tab's parts on their own: smoothing, run data and CSV, the model form, the LR preview,
the torchrun command, settings and the worker's error path."""
from __future__ import annotations

import csv
import math
import os
import shlex

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402

from app.tabs.training.run_data import DebiasedEMA, RunData, Series, smooth, write_csv  # noqa: E402
from app.tabs.training.torchrun import Launch, torchrun_command  # noqa: E402
from engine import closest_preset  # noqa: E402
from engine.config import PRESETS, ModelConfig, TrainConfig  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))


# ------------------------------------------------------------------ smoothing and run data

def test_debiased_ema_matches_tensorboard_and_keeps_constants_exact():
    assert np.allclose(smooth([2.0, 2.0, 2.0, 2.0], 0.9), 2.0)  # debiasing: no pull toward zero
    assert np.allclose(smooth([1.0, 5.0, 3.0], 0.0), [1.0, 5.0, 3.0])
    values, w = [4.0, 2.0, 3.0, 1.0], 0.6
    last, expected = 0.0, []
    for i, v in enumerate(values, 1):
        last = last * w + (1 - w) * v
        expected.append(last / (1 - w ** i))
    assert np.allclose(smooth(values, w), expected)


def test_incremental_ema_equals_the_whole_sequence_and_skips_non_finite():
    data = np.array([3.0, 2.5, float("nan"), 2.0, 1.8, 1.7])
    ema = DebiasedEMA(0.8)
    ema.update(data[:2])
    out = ema.update(data)
    assert len(out) == len(data)
    clean = smooth([3.0, 2.5, 2.0, 1.8, 1.7], 0.8)
    assert np.allclose(out[[0, 1, 3, 4, 5]], clean)
    assert math.isfinite(out[2])


def test_series_grows_past_its_capacity():
    s = Series(capacity=2)
    s.extend(range(10))
    assert list(s.view()) == list(range(10))


def test_run_history_round_trip_and_csv(tmp_path):
    run = RunData("run 1", "#000000")
    for step in range(1, 6):
        run.add_step(step, 5.0 - step * 0.5, 1e-3, step * 100, 1234.0)
    run.add_eval(0, 5.2, 0)
    run.add_eval(5, 2.6, 500)
    again = RunData.from_history("copy", "#111111", run.to_history())
    assert again.to_history() == run.to_history()

    path = tmp_path / "runs.csv"
    write_csv(path, [run], smoothing=0.0)
    rows = list(csv.DictReader(path.open()))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[0]["val_loss"] == "5.2" and rows[0]["train_loss"] == ""
    assert rows[5]["val_loss"] == "2.6" and rows[5]["train_loss"] == rows[5]["train_loss_smoothed"] == "2.5"
    assert rows[3]["tokens_seen"] == "300"


def test_history_with_missing_columns_still_loads():
    run = RunData.from_history("old", "#000", {"step": [1, 2], "loss": [3.0, 2.0]})
    assert run.num_steps == 2 and math.isnan(run.lr.view()[0]) and len(run.val_step) == 0


# ------------------------------------------------------------------ widgets

def test_model_form_counts_parameters_and_memory_as_you_edit(qtbot):
    from app.formatting import format_bytes
    from app.tabs.training.model_form import ModelForm

    form = ModelForm()
    qtbot.addWidget(form)
    form.preset_combo.setCurrentText("small")
    expected = PRESETS["small"].with_changes(vocab_size=form.vocab_size.value())
    assert form.config() == expected
    assert f"{expected.num_params():,}" in form.params_label.text()
    assert form.memory_labels["bf16"].text() == format_bytes(expected.weights_bytes("bf16"))
    with qtbot.waitSignal(form.config_changed):
        form.n_layers.setValue(3)
    assert form.preset_combo.currentText() == "custom"
    assert f"{expected.with_changes(n_layers=3).num_params():,}" in form.params_label.text()
    form.emb_dim.setValue(385)  # not divisible by 6 heads: shown, never raised
    assert form.config() is None and form.error_label.text() and form.params_label.text() == "–"
    form.set_locked(True, "locked")
    assert not form.emb_dim.isEnabled() and not form.preset_combo.isEnabled()


def test_lr_preview_follows_warmup_and_cosine(qtbot):
    from app.tabs.training.lr_preview import LRPreview, schedule

    xs, ys = schedule(steps=1000, lr=1e-3, warmup_steps=100, min_lr_ratio=0.1)
    assert ys.max() == pytest.approx(1e-3, rel=1e-3)
    assert xs[np.argmax(ys)] == 100  # the peak is at the end of the warm-up
    assert ys[0] < 2e-5 and ys[-1] == pytest.approx(1e-4, rel=0.01)
    assert len(xs) <= 401
    preview = LRPreview()
    qtbot.addWidget(preview)
    preview.set_schedule(50, 3e-4, 5)
    x, y = preview.curve.getData()
    assert len(x) == 50 and y.max() == pytest.approx(3e-4)


def test_train_form_builds_a_train_config_and_reports_problems(qtbot):
    from app.tabs.training.train_form import TrainSettingsForm

    form = TrainSettingsForm()
    qtbot.addWidget(form)
    form.set_values({"steps": 77, "lr": 3e-4, "batch_size": 5, "precision": "fp32", "device": "cpu", "bogus": 1})
    config = form.train_config()
    assert (config.steps, config.lr, config.batch_size, config.device) == (77, 3e-4, 5, "cpu")
    assert config.sample_interval == config.eval_interval
    form.precision.setCurrentText("fp16")  # fp16 needs a CUDA GPU
    assert "fp16" in (form.problem() or "") and not form.problem_label.isHidden()
    form.lr.lineEdit().setText("2e-3")
    form.lr.interpretText()
    assert form.lr.value() == pytest.approx(2e-3)


def test_train_form_starts_at_the_device_precision_until_one_is_chosen(qtbot, monkeypatch):
    from app.tabs.training import train_form as train_form_module

    preferred = {"cpu": "bf16", "cuda": "fp32"}
    monkeypatch.setattr(train_form_module, "preferred_training_precision", lambda device: preferred[device.type])
    monkeypatch.setattr(train_form_module, "pick_device", lambda name: torch.device("cuda" if name == "cuda" else "cpu"))
    form = train_form_module.TrainSettingsForm()
    qtbot.addWidget(form)
    form.device.addItem("cuda")  # a GPU, as the form would list it
    assert form.values()["precision"] == "bf16"
    form.device.setCurrentText("cuda")
    assert form.values()["precision"] == "fp32"  # follows the device
    form.device.setCurrentText("cpu")
    form.precision.setCurrentText("fp32")
    form.precision.activated.emit(form.precision.currentIndex())  # the user picks fp32
    form.device.setCurrentText("cuda")
    form.device.setCurrentText("cpu")
    assert form.values()["precision"] == "fp32"  # the user's choice stays
    restored = train_form_module.TrainSettingsForm()
    qtbot.addWidget(restored)
    restored.set_values({"precision": "fp32"})  # a saved run's precision is a choice too
    restored.device.addItem("cuda")
    restored.device.setCurrentText("cuda")
    restored.device.setCurrentText("cpu")
    assert restored.values()["precision"] == "fp32"


# ------------------------------------------------------------------ torchrun command

def _train_args(command: str):
    """Parse the part after `-m engine` with the engine's own command-line parser."""
    from engine.cli import build_parser

    words = shlex.split(command)
    parser = build_parser()
    try:
        return parser.parse_args(words[words.index("engine") + 1:])
    except SystemExit:  # the train command is not registered in this checkout
        pytest.skip("python -m engine train is not available")


def test_torchrun_command_single_node_matches_the_form():
    model = PRESETS["tiny"].with_changes(n_layers=6, vocab_size=99)
    train = TrainConfig(steps=300, batch_size=12, grad_accum=2, lr=6e-4, warmup_steps=30, eval_interval=25,
                        sample_interval=25, precision="bf16", device="auto", compile=True)
    command = torchrun_command(model, train, corpus="python-docs", tokenizer="bpe:1024",
                               launch=Launch(nproc_per_node=4))
    assert command.startswith("torchrun --standalone --nproc_per_node=4 -m engine train --preset tiny ")
    args = _train_args(command)
    assert args.preset == "tiny" and args.n_layers == 6 and args.n_heads is None
    assert (args.corpus, args.tokenizer, args.steps, args.batch_size, args.grad_accum) == \
        ("python-docs", "bpe:1024", 300, 12, 2)
    assert (args.lr, args.warmup_steps, args.eval_interval, args.precision, args.compile) == \
        (6e-4, 30, 25, "bf16", True)
    assert args.out == "model.safetensors"


def test_torchrun_command_multi_node_fine_tune_and_quoting():
    model = ModelConfig(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12)
    train = TrainConfig(device="cuda:1")
    command = torchrun_command(model, train, corpus="/data/my corpus.txt", tokenizer="gpt2",
                               init="/models/base.safetensors", out="tuned.safetensors",
                               launch=Launch(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29500", fsdp=True))
    words = shlex.split(command)
    assert words[:6] == ["torchrun", "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
                         "--rdzv_endpoint=node0:29500", "--rdzv_id=llm-playground"]
    assert "--standalone" not in words and "--preset" not in words and "--tokenizer" not in words
    assert words[words.index("--init") + 1] == "/models/base.safetensors"
    assert words[words.index("--corpus") + 1] == "/data/my corpus.txt"
    assert words[words.index("--device") + 1] == "cuda" and "--fsdp" in words


def test_closest_preset_needs_fewest_overrides():
    assert closest_preset(PRESETS["gpt2-124m"].with_changes(n_layers=24)) == "gpt2-124m"
    assert closest_preset(PRESETS["small"].with_changes(drop_rate=0.0)) == "small"


def test_export_command_dialog_shows_the_tab_settings(qtbot):
    from app.tabs.training.command_dialog import TorchrunDialog

    dialog = TorchrunDialog(PRESETS["tiny"], TrainConfig(steps=42), "copy", "char", None)
    qtbot.addWidget(dialog)
    dialog.nproc.setValue(2)
    assert "--nproc_per_node=2" in dialog.text.toPlainText() and "--steps 42" in dialog.text.toPlainText()
    dialog.nnodes.setValue(3)
    assert dialog.endpoint.isEnabled() and "--nnodes=3" in dialog.text.toPlainText()
    dialog.copy()
    from PySide6.QtGui import QGuiApplication
    assert QGuiApplication.clipboard().text() == dialog.command


# ------------------------------------------------------------------ settings and worker

def test_settings_use_the_override_file_and_keep_recent_files(tmp_path):
    from app.settings import Settings

    s = Settings()
    assert s.location == str(tmp_path / "settings.ini")
    for name in ("a", "b", "a"):
        s.add_recent_file(tmp_path / f"{name}.safetensors")
    assert [os.path.basename(p) for p in s.recent_files()] == ["a.safetensors", "b.safetensors"]
    s.set_value("x/number", 7)
    s.sync()
    assert Settings().value("x/number", 0) == 7 and Settings().value("x/missing", True) is True


def test_worker_reports_torch_runtime_errors_and_delivers_earlier_events(qtbot):
    """superqt drops a bare RuntimeError silently; torch raises them for most failures."""
    from app.worker import JobRunner

    def job():
        yield "first"
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")

    runner = JobRunner()
    received, errors = [], []
    handle = runner.start("test", job())
    handle.events.connect(received.extend)
    handle.failed.connect(errors.append)
    with qtbot.waitSignal(handle.finished, timeout=10000):
        pass
    assert runner.stop_all(10000)  # the pool thread is done too (no race with the process exiting)
    assert received == ["first"]
    assert errors == ["mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"]


def test_form_labels_explain_their_fields(qtbot):
    from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QSpinBox, QWidget

    from app.tabs.training.model_form import ModelForm
    from app.widgets.forms import share_tooltips_with_labels

    form = ModelForm()
    qtbot.addWidget(form)
    labels = {w.text(): w.toolTip() for w in form.findChildren(QLabel)}
    assert labels["n_heads"] == form.n_heads.toolTip() and "head" in labels["n_heads"].lower()
    # a row whose field is a layout takes its tooltip from the named fallback widget
    host = QWidget()
    qtbot.addWidget(host)
    layout = QFormLayout(host)
    seed = QSpinBox()
    seed.setToolTip("the seed")
    row = QHBoxLayout()
    row.addWidget(seed)
    layout.addRow("Seed", row)
    share_tooltips_with_labels(layout, fallbacks={0: seed})
    assert layout.itemAt(0, QFormLayout.ItemRole.LabelRole).widget().toolTip() == "the seed"


def test_runs_list_hides_curves_and_clears_earlier_runs(qtbot):
    from app.tabs.training.loss_plot import TrainingPlots

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    first, second = plots.start_run("first"), plots.start_run("second")
    for run in (first, second):
        run.add_step(1, 2.0, 1e-3, 64, 100.0)
        run.add_step(2, 1.5, 1e-3, 128, 100.0)
    plots.redraw()
    items = plots.runs_list.list
    assert [items.item(i).text() for i in range(items.count())] == ["first", "second"]
    assert items.item(1).font().bold() and not items.item(0).font().bold()  # the latest run
    items.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert not first.visible and second.visible
    assert plots.drawn_points(first) == 2  # hidden, not forgotten
    plots.runs_list.clear_button.click()
    assert plots.runs == [second] and items.count() == 1 and items.item(0).font().bold()
