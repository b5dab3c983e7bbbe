"""The Training tab's plots and run view: what a person sees of a run, driven like a person would (pytest-qt).

Widget tests feed the plots RunData directly; the window tests train a very small model with the fixtures of
test_app_window (throw-away settings and cache, patched modal dialogs).
"""
from __future__ import annotations

import csv
import math
import os
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyqtgraph as pg  # noqa: E402
import test_app_window  # noqa: E402
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from test_app_window import quick_settings, train  # noqa: E402

from app import theme  # noqa: E402
from app.jobs.model_io import DEFAULT_MODEL  # noqa: E402
from app.jobs.training import TrainingJob  # noqa: E402
from app.tabs.training import loss_plot  # noqa: E402
from app.tabs.training.loss_plot import TrainingPlots  # noqa: E402
from app.tabs.training.plots_panel import PlotsPanel  # noqa: E402
from app.tabs.training.run_data import RunData  # noqa: E402
from app.tabs.training.samples_view import SamplesView  # noqa: E402
from engine import SampleEvent, StepEvent  # noqa: E402

# The window fixtures of test_app_window (a window over throw-away settings, scripted dialogs).
cache_dir, dialogs, window = test_app_window.cache_dir, test_app_window.dialogs, test_app_window.window


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    yield


def long_history(steps: int = 2000) -> dict:
    """A finished run's history, like the default model's: many steps, a falling noisy loss."""
    rng = np.random.default_rng(0)
    step = list(range(1, steps + 1))
    loss = (4.0 * np.exp(-np.arange(steps) / 300) + 1.0 + 0.05 * rng.standard_normal(steps)).tolist()
    return {"step": step, "loss": loss, "lr": [1e-3] * steps, "tokens_seen": [s * 64 for s in step],
            "tokens_per_s": [5000.0] * steps, "val_step": [0, steps], "val_loss": [5.0, 1.1],
            "val_tokens_seen": [0, steps * 64]}


def add_steps(run: RunData, first: int, last: int, *, t0: float = 1.7e9) -> None:
    for s in range(first, last + 1):
        run.add_step(s, 4.0 - 0.01 * s, 1e-3, s * 32, 1000.0 + s, grad_norm=0.5 + 0.01 * s,
                     elapsed_s=0.25 * s, wall_time=t0 + 3.0 + 0.25 * s)


@pytest.fixture
def plots(qtbot):
    widget = TrainingPlots()
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def ticks_are_current(plots: TrainingPlots) -> bool:
    """The axes as painted (pyqtgraph caches their ticks) equal the axes drawn afresh for the current ranges."""
    painted = plots.graphics.grab().toImage()
    for plot in plots._plots():
        for name in ("left", "bottom"):
            plot.getAxis(name).picture = None
    return plots.graphics.grab().toImage() == painted


def span_fraction(plots: TrainingPlots, run: RunData) -> float:
    """How much of the plots' x range the run's points cover."""
    x = run.x(plots.x_mode)
    lo, hi = plots.x_range()
    return (np.nanmax(x) - np.nanmin(x)) / (hi - lo)


def scene_point(plot: pg.PlotItem, fx: float, fy: float) -> QPointF:
    """A point of the scene at a fraction of a plot's view box (0, 0 = top left)."""
    rect = plot.vb.sceneBoundingRect()
    return QPointF(rect.left() + fx * rect.width(), rect.top() + fy * rect.height())


def send_mouse(view: pg.GraphicsView, kind: QEvent.Type, scene_pos: QPointF, button: Qt.MouseButton,
               buttons: Qt.MouseButton) -> None:
    local = QPointF(view.mapFromScene(scene_pos))
    event = QMouseEvent(kind, local, QPointF(view.viewport().mapToGlobal(local.toPoint())), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), event)


def drag(qtbot, view: pg.GraphicsView, start: QPointF, end: QPointF) -> None:
    """A left-button drag, with pauses so pyqtgraph's scene does not drop the moves as too frequent."""
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    send_mouse(view, QEvent.Type.MouseButtonPress, start, left, left)
    for t in np.linspace(0.1, 1.0, 6):
        qtbot.wait(40)
        send_mouse(view, QEvent.Type.MouseMove, start + (end - start) * float(t), none, left)
    qtbot.wait(40)
    send_mouse(view, QEvent.Type.MouseButtonRelease, end, left, none)


# ------------------------------------------------------------------ item 1: a new run is not hidden


def test_the_view_follows_the_new_run_and_older_runs_overlay_it(plots):
    old = plots.add_history("default model", long_history(2000))
    plots.redraw()
    assert span_fraction(plots, old) > 0.9  # alone, the old run is the active one
    plots.graphics.grab()  # painted: the axes' ticks for steps 0-2000 are cached
    new = plots.start_run("run 1")
    add_steps(new, 1, 20)
    plots.redraw()
    assert span_fraction(plots, new) >= 0.9
    lo, hi = plots.x_range()
    assert hi < 100  # not the 2000 steps of the older run...
    assert plots.drawn_points(old) == 2000  # ...which is still drawn, over the same steps
    assert plots.lr_plot.vb.viewRange()[0] == pytest.approx([lo, hi])  # every plot shows the same steps
    assert ticks_are_current(plots)  # and their axes are labelled for them, not for steps 0-2000
    # The y range fits the new run too: the old one (from 5.0 at these steps, down to 1.0 later) does not set it.
    y_lo, y_hi = plots.loss_plot.vb.viewRange()[1]
    assert y_lo <= new.loss.view().min() and y_hi >= new.loss.view().max()
    assert y_hi - y_lo < 2 * np.ptp(new.loss.view())
    speed_lo, speed_hi = plots.speed_plot.vb.viewRange()[1]
    assert speed_lo == 0 and new.tokens_per_s.view().max() <= speed_hi < 1.2 * new.tokens_per_s.view().max()
    plots.log_check.setChecked(True)  # the y range in log units
    y_lo, y_hi = plots.loss_plot.vb.viewRange()[1]
    assert y_lo <= np.log10(new.loss.view().min()) and np.log10(new.loss.view().max()) <= y_hi < 1
    add_steps(new, 21, 400)
    plots.redraw()
    assert span_fraction(plots, new) >= 0.9 and plots.x_range()[1] < 500


def test_hiding_the_new_run_follows_the_one_before(plots):
    old = plots.add_history("default model", long_history(2000))
    new = plots.start_run("run 1")
    add_steps(new, 1, 10)
    plots.redraw()
    plots.runs_list.list.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert plots.active_run() is old and span_fraction(plots, old) > 0.9


def test_box_zoom_holds_the_view_until_reset(plots, qtbot):
    run = plots.start_run("run 1")
    add_steps(run, 1, 100)
    plots.redraw()
    full = plots.x_range()
    plots.zoom_button.click()
    assert plots.loss_plot.vb.state["mouseMode"] == pg.ViewBox.RectMode
    drag(qtbot, plots.graphics, scene_point(plots.loss_plot, 0.25, 0.2), scene_point(plots.loss_plot, 0.5, 0.8))
    lo, hi = plots.x_range()
    assert full[0] + 0.2 * (full[1] - full[0]) < lo < hi < full[0] + 0.55 * (full[1] - full[0])
    assert not plots.following
    assert plots.grad_plot.vb.viewRange()[0] == pytest.approx([lo, hi])  # every plot shows the same steps
    in_box = run.grad_norm.view()[(run.step.view() >= lo) & (run.step.view() <= hi)]
    assert in_box.max() <= plots.grad_plot.vb.viewRange()[1][1] < 1.2 * in_box.max()  # and fits its y to them
    add_steps(run, 101, 200)  # new points do not pull the zoomed view away
    plots.redraw()
    assert plots.x_range() == pytest.approx((lo, hi))
    plots.reset_button.click()
    assert plots.following and span_fraction(plots, run) > 0.9 and plots.x_range()[1] > 190
    plots.zoom_button.click()
    assert plots.loss_plot.vb.state["mouseMode"] == pg.ViewBox.PanMode


def test_each_run_has_one_entry_when_its_history_is_opened_again(plots):
    first = plots.add_history("default model", long_history(300))
    again = plots.add_history("default model", long_history(300))
    assert again is first and len(plots.runs) == 1 and plots.runs_list.list.count() == 1
    # A run of this session, saved and reopened under its file's name, is the same run: listed once, now latest.
    live = plots.start_run("run 1")
    add_steps(live, 1, 30)
    plots.add_history("trained.safetensors", live.to_history())
    assert plots.runs == [first, live] and plots.runs_list.list.count() == 2
    plots.runs_list.list.item(0).setCheckState(Qt.CheckState.Unchecked)  # the default model, hidden
    assert not first.visible
    plots.add_history("default model", long_history(300))
    assert plots.runs == [live, first] and plots.runs_list.list.item(1).font().bold()
    assert first.visible and plots.active_run() is first  # opened again: shown, and the view follows it
    # The same file saved again after more training: the new history replaces the old entry.
    longer = plots.add_history("default model", long_history(400))
    assert [r.name for r in plots.runs] == ["run 1", "default model"] and longer.num_steps == 400
    assert plots.runs_list.list.count() == 2


# ------------------------------------------------------------------ item 9: plots at TensorBoard's level


def test_every_plot_has_axis_titles_that_follow_the_x_axis(plots):
    lefts = [p.getAxis("left").labelText for p in plots._plots()]
    assert lefts == ["loss", "learning rate", "gradient norm", "tokens / s"]
    assert {p.getAxis("bottom").labelText for p in plots._plots()} == {"step"}
    plots.x_combo.setCurrentText("Tokens seen")
    assert {p.getAxis("bottom").labelText for p in plots._plots()} == {"tokens seen"}
    assert all(p.getAxis("bottom").label.isVisible() for p in plots._plots())
    run = plots.start_run("run 1")
    add_steps(run, 1, 30)  # learning rate 1e-3
    plots.redraw()
    assert plots.lr_plot.getAxis("left").label.toPlainText() == "learning rate (x0.001)"  # the scale is told
    run.add_step(31, 1.0, 5.0, 0, 1.0)
    plots.redraw()
    assert plots.lr_plot.getAxis("left").label.toPlainText().strip() == "learning rate"


def test_x_axis_switches_between_steps_tokens_wall_and_relative_time(plots):
    saved = plots.add_history("default model", long_history(50))  # a history keeps no times
    run = plots.start_run("run 1")
    add_steps(run, 1, 40, t0=1.7e9)
    plots.redraw()
    curves = plots.curves_of(run)
    assert list(curves.ema.getData()[0]) == list(range(1, 41))
    assert plots.loss_plot.getAxis("bottom").tickStrings([0, 500, 1000, 1500, 1e5], 1, 500) == [
        "0", "500", "1k", "1.5k", "100k"]  # short enough not to run into each other on the small plots
    plots.x_combo.setCurrentText("Tokens seen")
    assert list(curves.ema.getData()[0]) == [s * 32 for s in range(1, 41)]
    plots.x_combo.setCurrentText("Wall time")
    x = curves.ema.getData()[0]
    assert x[0] == pytest.approx(1.7e9 + 3.25) and np.diff(x) == pytest.approx(0.25)  # seconds since the epoch
    assert isinstance(plots.loss_plot.getAxis("bottom"), pg.DateAxisItem)
    assert plots.x_range()[0] > 1.6e9 and span_fraction(plots, run) > 0.9
    assert plots.drawn_points(saved) == 0  # no times: not placed on a time axis, still listed
    val_x = curves.val.getData()[0]
    assert val_x is None or len(val_x) == 0
    plots.x_combo.setCurrentText("Relative time")
    assert curves.ema.getData()[0] == pytest.approx(0.25 * np.arange(1, 41))
    assert plots.x_range()[1] < 15
    assert plots.loss_plot.getAxis("bottom").tickStrings([30, 120, 3690], 1, 30) == ["0:30", "2:00", "1:01:30"]
    plots.x_combo.setCurrentText("Steps")
    assert plots.drawn_points(saved) == 50 and not isinstance(plots.loss_plot.getAxis("bottom"), pg.DateAxisItem)


def test_validation_points_take_the_time_of_their_step(plots):
    run = plots.start_run("run 1")
    run.add_eval(0, 5.0, 0)
    add_steps(run, 1, 10)
    run.add_eval(10, 3.0, 320)
    plots.x_combo.setCurrentText("Relative time")
    plots.redraw()
    assert list(plots.curves_of(run).val.getData()[0]) == pytest.approx([0.25, 2.5])


def test_the_raw_loss_line_can_be_seen_under_the_smoothed_one(plots, qtbot):
    run = plots.start_run("run 1")
    rng = np.random.default_rng(1)
    for s in range(1, 301):
        run.add_step(s, 3.0 + 0.3 * rng.standard_normal(), 1e-3, s, 1.0)
    plots.redraw()
    curves = plots.curves_of(run)
    assert curves.raw.zValue() < curves.ema.zValue() and curves.raw.isVisible()
    for item in (curves.ema, curves.val):
        item.setVisible(False)
    plots.legend.setVisible(False)
    qtbot.wait(50)
    image = plots.graphics.grab().toImage()
    rect = plots.loss_plot.vb.sceneBoundingRect().toRect().adjusted(4, 4, -4, -4)
    background = theme.plot_background()
    best = max(theme.contrast_ratio(QColor(image.pixel(x, y)), background)
               for x in range(rect.left(), rect.right(), 2) for y in range(rect.top(), rect.bottom(), 2))
    assert best >= 1.7, best  # was ~1.4 (an alpha of 70): hard to see at all on a light background
    y_lo, y_hi = plots.loss_plot.vb.viewRange()[1]
    assert y_lo <= run.loss.view().min() and run.loss.view().max() <= y_hi  # every raw point in view
    plots.raw_check.setChecked(False)
    assert not curves.raw.isVisible()
    y_lo, y_hi = plots.loss_plot.vb.viewRange()[1]  # fitted to the smoothed line: narrower
    assert y_hi - y_lo < 0.8 * np.ptp(run.loss.view()) and y_lo <= np.nanmin(curves.ema.yData)


def test_grad_norm_plot_readout_and_csv_show_the_steps_grad_norm(plots, tmp_path):
    run = plots.start_run("run 1")
    add_steps(run, 1, 30)
    plots.redraw()
    x, y = plots.curves_of(run).grad.getData()
    assert list(y) == pytest.approx([0.5 + 0.01 * s for s in range(1, 31)]) and list(x) == list(range(1, 31))
    assert "grad norm <b>0.6</b>" in plots.values_at(10)
    plots.export_csv(tmp_path / "runs.csv")
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [float(r["grad_norm"]) for r in rows] == pytest.approx(list(y))
    assert [float(r["elapsed_s"]) for r in rows] == pytest.approx([0.25 * s for s in range(1, 31)])


def test_samples_are_kept_and_browsed_by_step(qtbot):
    view = SamplesView()
    qtbot.addWidget(view)
    assert not view.step_combo.isEnabled() and view.text.placeholderText()
    for step in (0, 100, 200):
        view.add(SampleEvent(step=step, prompt="P:", text=f"text at {step}"))
    assert view.shown_step() == 200 and view.text.toPlainText() == "P:text at 200"  # the newest, as it came
    assert [view.step_combo.itemText(i) for i in range(3)] == ["step 0", "step 100", "step 200"]
    view.prev_button.click()
    assert view.shown_step() == 100 and view.text.toPlainText() == "P:text at 100"
    view.add(SampleEvent(step=300, prompt="P:", text="text at 300"))
    assert view.shown_step() == 100  # reading an older one: a new sample does not pull the view away
    view.show_step(250)
    assert view.shown_step() == 200
    view.next_button.click()
    assert view.shown_step() == 300 and not view.next_button.isEnabled()
    view.add(SampleEvent(step=400, prompt="P:", text="text at 400"))
    assert view.shown_step() == 400  # at the newest again: it follows
    view.clear()
    assert view.samples == [] and view.step_combo.count() == 0 and not view.text.toPlainText()


# ------------------------------------------------------------------ item 7: stale state


def test_crosshair_readout_goes_when_the_mouse_leaves_and_when_its_run_goes(plots, qtbot):
    run = plots.start_run("run 1")
    add_steps(run, 1, 50)
    plots.redraw()
    point = plots.graphics.mapFromScene(scene_point(plots.loss_plot, 0.5, 0.5))
    qtbot.mouseMove(plots.graphics.viewport(), QPoint(point.x(), point.y()))
    qtbot.waitUntil(lambda: "run 1" in plots.hover_label.text(), timeout=2000)
    assert plots.crosshair.shown
    QApplication.sendEvent(plots.graphics, QEvent(QEvent.Type.Leave))
    assert plots.hover_label.text().strip() == "" and not plots.crosshair.shown
    qtbot.wait(100)  # no queued move brings it back
    assert plots.hover_label.text().strip() == "" and not plots.crosshair.shown

    plots.crosshair.move_to(scene_point(plots.loss_plot, 0.5, 0.5))
    assert "run 1" in plots.hover_label.text() and plots.crosshair.shown
    plots.remove_run(run)
    assert plots.hover_label.text().strip() == "" and not plots.crosshair.shown


def test_exported_png_has_no_crosshair_and_its_legend_names_the_runs(plots, tmp_path):
    old = plots.add_history("default model", long_history(200))
    run = plots.start_run("run 1 · tiny · copy")
    add_steps(run, 1, 50)
    plots.redraw()
    assert plots.legend_labels()[:2] == [old.name, run.name]
    plots.crosshair.move_to(scene_point(plots.loss_plot, 0.5, 0.5))
    assert plots.crosshair.shown
    plots.export_png(tmp_path / "hover.png", width=800)
    assert plots.crosshair.shown  # put back after the export
    plots.crosshair.clear()
    plots.export_png(tmp_path / "clean.png", width=800)
    hover, clean = QImage(str(tmp_path / "hover.png")), QImage(str(tmp_path / "clean.png"))
    assert not hover.isNull() and hover == clean
    # Hiding a run takes it out of the legend (and so out of the export).
    plots.runs_list.list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert old.name not in plots.legend_labels() and run.name in plots.legend_labels()


# ------------------------------------------------------------------ in the window, with real training


def test_a_new_run_fills_the_loss_plot_soon_after_start(window, qtbot, monkeypatch):
    monkeypatch.setattr(loss_plot, "PAINT_DUTY_FACTOR", 2)  # a busy test machine: keep redrawing
    tab = window.training_tab
    plots = tab.plots_panel.plots
    default = plots.current_run
    assert default is not None and default.num_steps >= 1000  # the default model's long history
    quick_settings(window, qtbot, steps=5000, eval_interval=1000)
    # The trainer's step events, recorded where they are made (in the worker thread: a Python callable
    # connected to the job's signal would run there too, racing the GUI thread for the interpreter's lock).
    steps: list[StepEvent] = []
    events = TrainingJob.events

    def recording(self):
        inner = events(self)
        try:
            for event in inner:
                if isinstance(event, StepEvent):
                    steps.append(event)
                yield event
        finally:
            inner.close()

    monkeypatch.setattr(TrainingJob, "events", recording)
    started = time.monotonic()
    tab.start()
    run = plots.current_run
    qtbot.waitUntil(lambda: run.num_steps >= 3 and plots.drawn_points(run) >= 3
                    and span_fraction(plots, run) >= 0.5, timeout=30000)
    filled_after = time.monotonic() - started
    tab.stop()
    qtbot.waitUntil(lambda: not tab.is_running, timeout=30000)
    assert filled_after < 10, filled_after
    names = [plots.runs_list.list.item(i).text() for i in range(plots.runs_list.list.count())]
    assert names == ["default model", run.name]
    assert plots.drawn_points(default) == default.num_steps  # still drawn under the new run
    # The grad-norm plot shows what the trainer's step events carried.
    plots.redraw()
    _, grad = plots.curves_of(run).grad.getData()
    assert len(steps) == run.num_steps and list(grad) == [e.grad_norm for e in steps]
    assert all(math.isfinite(g) and g > 0 for g in grad)
    assert len(tab.plots_panel.samples.samples) >= 1


def test_opening_another_model_clears_the_last_runs_status_and_lists_it_once(window, qtbot, dialogs):
    tab = window.training_tab
    plots = tab.plots_panel.plots
    train(window, qtbot, steps=6, eval_interval=3)
    assert "at step 6" in tab.controls.message_label.text() and tab.controls.stats_label.text()
    window.open_checkpoint(DEFAULT_MODEL)
    qtbot.waitUntil(lambda: window.state.checkpoint_path is not None and window.runner.running() == []
                    and plots.current_run.name == "default model", timeout=30000)
    assert not dialogs.errors
    assert tab.controls.message_label.text() == "" and tab.controls.stats_label.text() == ""
    assert tab.controls.progress.format() == "Ready"
    names = [plots.runs_list.list.item(i).text() for i in range(plots.runs_list.list.count())]
    assert names.count("default model") == 1 and len(names) == 2


def test_clicking_the_plots_at_a_step_shows_the_sample_written_there(qtbot):
    panel = PlotsPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    qtbot.waitExposed(panel)
    run = panel.plots.start_run("run 1")
    add_steps(run, 1, 100)
    panel.plots.redraw()
    for step in (0, 25, 50, 75, 100):
        panel.show_sample(SampleEvent(step=step, prompt="", text=f"sample {step}"))
    plot = panel.plots.loss_plot
    at_step_60 = plot.vb.mapViewToScene(QPointF(60, plot.vb.viewRange()[1][0])).x()
    rect = plot.vb.sceneBoundingRect()
    point = panel.plots.graphics.mapFromScene(QPointF(at_step_60, rect.center().y()))
    qtbot.mouseClick(panel.plots.graphics.viewport(), Qt.MouseButton.LeftButton, pos=point)
    qtbot.waitUntil(lambda: panel.samples.shown_step() == 50, timeout=2000)  # the latest sample by step 60
    assert panel.sample_text.toPlainText() == "sample 50"
