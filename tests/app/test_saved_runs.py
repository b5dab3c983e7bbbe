"""Saved runs in the Training tab (app/tabs/training/saved_runs.py): a run trained in one window is listed by
the next window over the same data folder, overlaid on the plots, deleted after asking, and exported to
TensorBoard (or the export is disabled with the reason); garbled logs are a one-line warning."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.jobs.training import TrainingJob  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.tabs.training import saved_runs as saved_runs_module  # noqa: E402
from app.tabs.training.loss_plot import TrainingPlots  # noqa: E402
from app.tabs.training.saved_runs import COLUMNS, SavedRunsPanel  # noqa: E402
from app.worker import JobRunner  # noqa: E402
from engine import (  # noqa: E402
    EvalEvent,
    FinishedEvent,
    ModelConfig,
    RunLogWriter,
    RunSpec,
    SampleEvent,
    StepEvent,
    TrainConfig,
    runs_dir,
)


@pytest.fixture
def data(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("LLM_PLAYGROUND_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def answers(monkeypatch):
    """QMessageBox.question answered from a list; the questions asked are kept."""
    asked: list[str] = []
    replies: list = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(
        lambda parent, title, text, *a: (asked.append(text), replies.pop(0))[1]))
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a: pytest.fail(f"error dialog: {a[2]}")))
    return asked, replies


def _cell(panel: SavedRunsPanel, row: int, column: str) -> str:
    return panel.table.item(row, COLUMNS.index(column)).text()


def _write_run(name: str, losses: list[float], folder: Path | None = None) -> RunLogWriter:
    log = RunLogWriter.create(name, corpus="copy", tokenizer="char", folder=folder)
    for i, loss in enumerate(losses, 1):
        log.write(StepEvent(i, len(losses), loss, 1e-3, 0.5, 64 * i, 1000.0, 0.0, 0.01 * i, 0.0))
    log.write(EvalEvent(len(losses), losses[-1] + 0.1, losses[-1], 64 * len(losses)))
    log.write(SampleEvent(len(losses), "ab", "cd"))
    log.write(FinishedEvent(len(losses), "completed"))
    log.close()
    return log


def _panel(qtbot) -> tuple[SavedRunsPanel, TrainingPlots, JobRunner]:
    runner = JobRunner()
    plots = TrainingPlots()
    panel = SavedRunsPanel(runner, plots)
    qtbot.addWidget(plots)
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: not runner.running(), timeout=10000)
    return panel, plots, runner


def test_runs_are_listed_after_a_restart_and_overlaid(qtbot, data, answers, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a: QMessageBox.StandardButton.Discard))
    first = MainWindow()
    qtbot.addWidget(first)
    tab = first.training_tab
    qtbot.waitUntil(lambda: first.state.model is not None, timeout=30000)
    tab.model_panel.scratch_radio.setChecked(True)
    form = tab.model_panel.form
    form.preset_combo.setCurrentText("tiny")
    form.context_length.setValue(32)
    form.emb_dim.setValue(64)
    form.n_layers.setValue(2)
    t = tab.train_form
    for widget, value in ((t.steps, 6), (t.batch_size, 4), (t.warmup_steps, 2), (t.eval_interval, 3),
                          (t.eval_batches, 2), (t.sample_tokens, 8)):
        widget.setValue(value)
    t.device.setCurrentText("cpu")
    tab.data_panel.tokenizer_combo.setCurrentIndex(tab.data_panel.tokenizer_combo.findData("char"))
    tab.data_panel.select_corpus("copy")
    qtbot.waitUntil(lambda: tab.data_panel.corpus_ready, timeout=20000)
    assert tab.start() is not None
    qtbot.waitUntil(lambda: not tab.is_running, timeout=60000)
    trained = tab.plots_panel.plots.current_run
    qtbot.waitUntil(lambda: tab.saved_runs.table.rowCount() == 1, timeout=10000)  # listed as soon as it ends
    first.close()
    first.runner.stop_all(10000)

    second = MainWindow(load_default=False)
    qtbot.addWidget(second)
    panel = second.training_tab.saved_runs
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1, timeout=10000)
    assert _cell(panel, 0, "Run") == trained.name and _cell(panel, 0, "Steps") == "6"
    assert _cell(panel, 0, "Loss") == f"{trained.loss.view()[-1]:.4f}"
    assert _cell(panel, 0, "Val loss") == f"{trained.val_loss.view()[-1]:.4f}"
    assert _cell(panel, 0, "Model") == "2 layers · 4 heads · emb 64 · ctx 32"
    assert (_cell(panel, 0, "Tokenizer"), _cell(panel, 0, "Corpus"), _cell(panel, 0, "Batch")) == ("char", "copy", "4 × 1")
    assert _cell(panel, 0, "Ended") == "completed"
    plots = second.training_tab.plots_panel.plots
    before = len(plots.runs)
    panel.table.item(0, 0).setCheckState(Qt.CheckState.Checked)  # tick Plot
    assert len(plots.runs) == before + 1
    overlay = plots.runs[-1]
    assert overlay.name.startswith(trained.name)
    assert list(overlay.step.view()) == list(trained.step.view())
    assert list(overlay.loss.view()) == pytest.approx(list(trained.loss.view()), rel=1e-12)
    assert list(overlay.val_loss.view()) == pytest.approx(list(trained.val_loss.view()), rel=1e-12)
    panel.table.item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    assert len(plots.runs) == before and overlay not in plots.runs
    second.close()


def test_delete_asks_first(qtbot, data, answers):
    asked, replies = answers
    keep = _write_run("keep", [3.0, 2.0])
    drop = _write_run("drop", [3.0, 2.5, 2.2])
    panel, plots, _ = _panel(qtbot)
    assert [_cell(panel, r, "Run") for r in range(2)] == ["keep", "drop"]
    panel.set_overlaid(1, True)
    assert len(plots.runs) == 1
    assert not panel.delete_button.isEnabled()  # nothing selected
    panel.table.selectRow(1)
    assert panel.delete_button.isEnabled()
    replies.append(QMessageBox.StandardButton.Cancel)
    panel.delete_button.click()
    assert "Delete 1 saved run(s)" in asked[-1] and "drop" in asked[-1]
    assert drop.path.exists() and len(plots.runs) == 1
    replies.append(QMessageBox.StandardButton.Yes)
    panel.delete_button.click()
    assert not drop.path.exists() and keep.path.exists()
    assert plots.runs == []  # its overlay went with it
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1, timeout=10000)
    assert _cell(panel, 0, "Run") == "keep"


def test_torn_and_garbled_logs_are_listed_with_a_one_line_warning(qtbot, data, answers):
    good = _write_run("good", [2.0, 1.5])
    torn = _write_run("torn", [2.0, 1.8, 1.6])
    with open(torn.path, "ab") as f:
        f.write(b'{"event": "step", "step": 4, "lo')  # the process died mid-line
    garbled = _write_run("garbled", [2.0, 1.7])
    lines = garbled.path.read_bytes().splitlines(keepends=True)
    garbled.path.write_bytes(b"".join(lines[:2] + [b"\x00\xffnot json\n", b'{"event": "step", "step": "x"}\n']
                                      + lines[2:]))
    (runs_dir() / "zz-junk.jsonl").write_bytes(os.urandom(3000))
    panel, _, _ = _panel(qtbot)
    names = [_cell(panel, r, "Run") for r in range(panel.table.rowCount())]
    assert sorted(names) == ["garbled", "good", "torn"]
    row = {n: r for r, n in enumerate(names)}
    assert _cell(panel, row["torn"], "Steps") == "3" and _cell(panel, row["torn"], "Loss") == "1.6000"
    assert _cell(panel, row["garbled"], "Steps") == "2" and _cell(panel, row["garbled"], "Loss") == "1.7000"
    assert good.path.exists()
    warnings = panel.info.toolTip().splitlines()
    assert len(warnings) == 2  # the garbled log and the junk file; the torn line is no news
    assert any("2 unreadable line(s) skipped" in w for w in warnings) and any("zz-junk" in w for w in warnings)
    assert "(and 1 more)" in panel.info.text() and "\n" not in panel.info.text()


def test_tensorboard_export(qtbot, data, answers, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = _write_run("exported", [2.0, 1.5, 1.25])
    panel, _, runner = _panel(qtbot)
    assert panel.export_button.isEnabled() and panel.export_reason is None
    target = tmp_path / "tb"
    target.mkdir()
    monkeypatch.setattr(saved_runs_module.dialogs, "open_folder", lambda *a: str(target))
    panel.export_button.click()
    qtbot.waitUntil(lambda: not runner.running(), timeout=30000)
    acc = EventAccumulator(str(target / log.path.stem))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [2.0, 1.5, 1.25]
    assert f"exported 1 to {target}" in panel.info.text()


def test_without_tensorboard_the_export_is_disabled_with_the_reason(qtbot, data, answers, monkeypatch):
    monkeypatch.setattr(saved_runs_module, "tensorboard_problem", lambda: "needs the optional package tensorboard")
    _write_run("a run", [2.0])
    panel, _, runner = _panel(qtbot)
    assert panel.table.rowCount() == 1
    assert not panel.export_button.isEnabled()
    assert "needs the optional package tensorboard" in panel.export_button.toolTip()
    assert "needs the optional package tensorboard" in panel.export_reason.text()
    monkeypatch.setattr(saved_runs_module.dialogs, "open_folder", lambda *a: pytest.fail("asked for a folder"))
    panel.export_selected()  # even if called, nothing happens
    assert runner.running() == []


def test_a_run_whose_log_cannot_be_written_still_trains_and_says_so(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    monkeypatch.setenv("LLM_PLAYGROUND_DATA", str(blocker))
    shape = ModelConfig(vocab_size=256, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    job = TrainingJob(RunSpec(TrainConfig(steps=2, batch_size=2, eval_interval=2, eval_batches=1, sample_interval=0),
                              corpus="copy", model_config=shape), "no log")
    events = list(job.events())
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2]
    assert job.log is None and job.log_problem.startswith("cannot keep a log of this run in ")
    assert "\n" not in job.log_problem
