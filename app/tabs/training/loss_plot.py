"""Live training plots: loss (raw + smoothed + validation), learning rate, gradient norm and tokens/s.

Event batches only append to numpy buffers (RunData); a 15 Hz timer pushes changed runs to their
curves with `setData`, with clip-to-view and peak downsampling so long runs stay cheap. Every run
since the app started stays in the runs list, in its own colour, and can be hidden.

The view follows the active run (the latest visible one): the x range is that run's, shared by every plot,
and each y range fits what is visible of it, so earlier and longer runs overlay the new one without
squashing it against the left edge. Panning or zooming (wheel, right-drag, or a box with Box zoom) stops
following until Reset view. The x axis can show steps, tokens, wall time or relative time (x_axis.py).

Its parts live beside it (plot_controls, plot_items, crosshair, x_axis, runs_list, run_data); what stays here
(runs, drawing, the view, the readout, export) shares the plots' state, hence a little over 500 lines.
"""
from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import dialogs, theme
from app.formatting import format_si
from app.tabs.training.crosshair import Crosshair
from app.tabs.training.plot_controls import PlotControls
from app.tabs.training.plot_items import Axis, RunCurves, TimedGraphics
from app.tabs.training.run_data import DebiasedEMA, RunData, write_csv
from app.tabs.training.runs_list import RunsList
from app.tabs.training.x_axis import X_MODES, XMode, format_x, make_axis

REDRAW_MS = 66  # ~15 Hz
# Painting must not steal the training's CPU: after a redraw whose paints took t ms, wait at least
# PAINT_DUTY_FACTOR * t ms before the next one (at most ~2.5% of one core), however fast events arrive.
# 1.5 ms of painting keeps the full timer rate; 20 ms (a slow or busy machine) redraws about once a second.
PAINT_DUTY_FACTOR = 40
MAX_PAINT_WAIT_MS = 1500  # one slow paint (the first one loads fonts) must not freeze the plots for long
FOLLOW_PADDING = 0.02  # of the active run's x extent, either side


def _finite_extent(*arrays: np.ndarray) -> tuple[float, float] | None:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.empty(0)
    if not len(values):
        return None
    return float(values.min()), float(values.max())


class TrainingPlots(QWidget):
    """Loss, learning rate, gradient norm and throughput of the current run and every earlier one."""

    step_clicked = Signal(int)  # a click on the plots, at this step of the active run (to read its sample)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs: list[RunData] = []
        self._curves: dict[int, RunCurves] = {}
        self._x_mode: XMode = X_MODES[0]
        self._follow = True  # the view follows the active run (off once the user pans or zooms)
        self._empty = True  # no runs: a hint instead of axes
        self._restyle_pending = False

        # ---- controls
        self.controls = PlotControls()
        c = self.controls
        self.smoothing_slider, self.smoothing_label, self.raw_check = c.smoothing_slider, c.smoothing_label, c.raw_check
        self.log_check, self.x_combo = c.log_check, c.x_combo
        self.zoom_button, self.reset_button = c.zoom_button, c.reset_button
        self.png_button = QToolButton()
        self.png_button.setText("PNG…")
        self.png_button.setToolTip("Save the plots as an image (with the runs' names in the legend)")
        self.csv_button = QToolButton()
        self.csv_button.setText("CSV…")
        self.csv_button.setToolTip("Save every run's numbers as a table")

        # ---- plots
        self.graphics = TimedGraphics()
        self.graphics.setMinimumHeight(260)
        self.loss_plot: pg.PlotItem = self.graphics.addPlot(row=0, col=0, colspan=3, axisItems={"left": Axis("left")})
        self.lr_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=0, axisItems={"left": Axis("left")})
        self.grad_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=1, axisItems={"left": Axis("left")})
        self.speed_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=2, axisItems={"left": Axis("left")})
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)
        titles = {self.loss_plot: "loss", self.lr_plot: "learning rate", self.grad_plot: "gradient norm",
                  self.speed_plot: "tokens / s"}
        for plot in self._plots():
            plot.setMenuEnabled(True)
            plot.hideButtons()  # its auto-range "A" would show every run at once: Reset view follows the latest
            plot.setLabel("left", titles[plot])
            plot.getAxis("left").setWidth(58)
            plot.vb.sigRangeChangedManually.connect(self._on_user_range)
        self._set_bottom_axes()
        self.legend = self.loss_plot.addLegend(offset=(-10, 10))
        self._empty_text = pg.TextItem("Press Start to train: the loss appears here as the model learns",
                                       anchor=(0.5, 0.5))
        self.loss_plot.addItem(self._empty_text, ignoreBounds=True)

        self.hover_label = QLabel(" ")
        self.hover_label.setTextFormat(Qt.TextFormat.RichText)
        self.hover_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.hover_label.setToolTip("Values of the latest visible run under the mouse")
        self.crosshair = Crosshair(self.graphics, self._plots(), self.hover_label, self.values_at)
        self.graphics.scene().sigMouseClicked.connect(self._on_clicked)

        self.runs_list = RunsList()
        export_row = QHBoxLayout()
        export_row.setContentsMargins(0, 0, 0, 0)
        export_row.addWidget(QLabel("Export"))
        export_row.addStretch(1)
        export_row.addWidget(self.png_button)
        export_row.addWidget(self.csv_button)
        runs_column = QVBoxLayout()
        runs_column.setContentsMargins(0, 0, 0, 0)
        runs_column.addWidget(self.runs_list, 1)
        runs_column.addLayout(export_row)

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        left = QVBoxLayout()
        left.addWidget(self.graphics, 1)
        left.addWidget(self.hover_label)
        body.addLayout(left, 1)
        body.addLayout(runs_column)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.controls)
        layout.addLayout(body, 1)

        self.smoothing_slider.valueChanged.connect(self._on_smoothing)
        self.raw_check.toggled.connect(self._on_raw_toggled)
        self.log_check.toggled.connect(self._on_log_toggled)
        self.x_combo.currentIndexChanged.connect(self._on_x_axis)
        self.zoom_button.toggled.connect(self.set_box_zoom)
        self.reset_button.clicked.connect(self.reset_view)
        self.png_button.clicked.connect(self._ask_export_png)
        self.csv_button.clicked.connect(self._ask_export_csv)
        self.runs_list.visibility_changed.connect(self._on_run_visibility)
        self.runs_list.clear_requested.connect(self.clear_earlier_runs)

        self._last_redraw = 0.0
        self._paint_ms_at_redraw = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer)
        self._timer.start()
        self._on_smoothing(self.smoothing_slider.value())
        self._restyle()
        self._show_empty(True)

    # ------------------------------------------------------------------ runs

    def _plots(self) -> list[pg.PlotItem]:
        return [self.loss_plot, self.lr_plot, self.grad_plot, self.speed_plot]

    @property
    def current_run(self) -> RunData | None:
        return self.runs[-1] if self.runs else None

    @property
    def smoothing(self) -> float:
        return self.smoothing_slider.value() / 100.0

    @property
    def x_mode(self) -> str:
        """"step", "tokens", "wall" or "relative"."""
        return self._x_mode.key

    @property
    def following(self) -> bool:
        return self._follow

    def start_run(self, name: str) -> RunData:
        """A new, empty run that becomes the current one."""
        return self.add_run(RunData(name, self._next_color()))

    def add_history(self, name: str, history: dict[str, Any]) -> RunData:
        """A finished run from a checkpoint's saved history."""
        return self.add_saved_run(RunData.from_history(name, "", history))

    def add_saved_run(self, run: RunData) -> RunData:
        """A finished run built beforehand (RunData.from_history), in the next free colour. A run that is
        already listed (the same checkpoint opened again, or one saved from a run of this session) is not
        listed twice: the listed one becomes the latest. A different run under the same name (the file
        saved again after more training) replaces the earlier one."""
        for old in self.runs:
            if old.same_curves(run):
                self._move_to_end(old)
                return old
        for old in [r for r in self.runs if r.name == run.name and r.from_file]:
            self.remove_run(old)
        run.color = self._next_color()
        return self.add_run(run)

    def _move_to_end(self, run: RunData) -> None:
        if run is self.current_run:
            return
        self.runs.remove(run)
        self.runs.append(run)
        self.runs_list.move_to_end(run)
        self._update_legend()
        self._follow = True
        self._view_changed()

    def _next_color(self) -> str:
        used = {r.color for r in self.runs}
        for i in range(len(self.runs) + 1):
            if theme.run_color(i) not in used:
                return theme.run_color(i)
        return theme.run_color(len(self.runs))

    def add_run(self, run: RunData) -> RunData:
        self.runs.append(run)
        curves = RunCurves.for_color(run.color, self.smoothing)
        self.loss_plot.addItem(curves.raw)
        self.loss_plot.addItem(curves.ema)
        self.loss_plot.addItem(curves.val)
        self.lr_plot.addItem(curves.lr)
        self.grad_plot.addItem(curves.grad)
        self.speed_plot.addItem(curves.speed)
        curves.raw.setVisible(self.raw_check.isChecked())
        self._curves[id(run)] = curves
        self.runs_list.add(run)
        self._update_legend()
        if self._empty:
            self._show_empty(False)
        self._follow = True  # a new run is what one wants to watch
        self._view_changed()
        return run

    def remove_run(self, run: RunData) -> None:
        curves = self._curves.pop(id(run), None)
        if curves is not None:
            for item in curves.items():
                item.getViewBox() and item.getViewBox().removeItem(item)
        self.runs = [r for r in self.runs if r is not run]
        self.runs_list.remove(run)
        self.crosshair.clear()  # the readout may describe the run that is gone
        self._update_legend()
        if not self.runs:
            self._show_empty(True)
        else:
            self._view_changed()

    @Slot()
    def clear_earlier_runs(self) -> None:
        for run in self.runs[:-1]:
            self.remove_run(run)

    def clear(self) -> None:
        for run in list(self.runs):
            self.remove_run(run)

    def _show_empty(self, empty: bool) -> None:
        """No runs yet: a hint instead of meaningless 0..1 axes."""
        self._empty = empty
        self._empty_text.setVisible(empty)
        for plot in self._plots():
            for name in ("left", "bottom"):
                plot.getAxis(name).setStyle(showValues=not empty)
            if empty:
                plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self._empty_text.setPos(0.5, 0.5)
        if not empty:
            self._view_changed()

    def _update_legend(self) -> None:
        """The visible runs by name (their smoothed line), then what the other line styles mean."""
        self.legend.clear()
        visible = [r for r in self.runs if r.visible]
        for run in visible:
            self.legend.addItem(self._curves[id(run)].ema, run.name)
        if visible:
            key = self._curves[id(visible[-1])]
            if self.raw_check.isChecked():
                self.legend.addItem(key.raw, "raw (unsmoothed)")
            self.legend.addItem(key.val, "validation")

    def legend_labels(self) -> list[str]:
        return [label.text for _, label in self.legend.items]

    @Slot(object, bool)
    def _on_run_visibility(self, key: int, visible: bool) -> None:
        for run in self.runs:
            if id(run) == key:
                run.visible = visible
                curves = self._curves[key]
                for c in curves.items():
                    c.setVisible(run.visible)
                curves.raw.setVisible(run.visible and self.raw_check.isChecked())
        self.crosshair.clear()
        self._update_legend()
        self._view_changed()

    # ------------------------------------------------------------------ the view

    def active_run(self) -> RunData | None:
        """The run the view follows: the latest visible one with points on the current x axis."""
        for run in reversed(self.runs):
            if run.visible and _finite_extent(run.x(self.x_mode), run.val_x(self.x_mode)) is not None:
                return run
        return None

    def x_range(self) -> tuple[float, float]:
        """The x range the plots show now."""
        lo, hi = self.loss_plot.vb.viewRange()[0]
        return float(lo), float(hi)

    def _view_changed(self) -> None:
        """Runs or their points changed: follow the active run (unless the user has zoomed or panned)."""
        if not self._follow or self._empty:
            return
        run = self.active_run()
        if run is None:  # nothing placeable on this axis (runs without times on a time axis)
            for plot in self._plots():
                plot.enableAutoRange()
            return
        lo, hi = _finite_extent(run.x(self.x_mode), run.val_x(self.x_mode))
        if hi <= lo:
            hi = lo + 1.0
        pad = FOLLOW_PADDING * (hi - lo)
        x_range = (lo - pad, hi + pad)
        for plot in self._plots():  # one setRange per plot: each one updates every curve in it
            plot.setRange(xRange=x_range, yRange=self._y_range(plot, run, x_range), padding=0)

    def _fit_y(self, keep: pg.PlotItem | None = None) -> None:
        """Each plot's y range (but keep's) fitted to the active run's points in the x range shown."""
        run = self.active_run()
        if run is not None:
            for plot in self._plots():
                y_range = self._y_range(plot, run, self.x_range())
                if plot is not keep and y_range is not None:
                    plot.setYRange(*y_range, padding=0)

    def _y_range(self, plot: pg.PlotItem, run: RunData, x_range: tuple[float, float]) -> tuple[float, float] | None:
        """A plot's y range for the run's points within x_range: the run one watches fills the plots, and
        earlier runs overlay it, clipped. Learning rate, gradient norm and throughput start from 0, so small
        wobbles do not look like big swings. None when the run has no point there."""
        c = self._curves[id(run)]
        items = {self.loss_plot: [c.raw if c.raw.isVisible() else c.ema, c.ema, c.val], self.lr_plot: [c.lr],
                 self.grad_plot: [c.grad], self.speed_plot: [c.speed]}[plot]
        log = plot is self.loss_plot and self.log_check.isChecked()
        shown = [np.empty(0)]
        for item in items:
            if item.xData is not None and len(item.xData):
                y = item.yData[(item.xData >= x_range[0]) & (item.xData <= x_range[1])]
                shown.append(np.log10(y[y > 0]) if log else y)
        y = np.concatenate(shown)
        y = y[np.isfinite(y)]
        if not len(y):
            return None
        lo, hi = float(y.min()), float(y.max())
        if plot is not self.loss_plot:  # from zero
            lo = min(0.0, lo)
        margin = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-12)  # a flat line: room around it
        return (lo if lo == 0 else lo - margin), hi + margin

    @Slot(object)
    def _on_user_range(self, _mask: object) -> None:
        """A pan or zoom by the user: stop following, and show the same x range in every plot. (pyqtgraph's
        setXLink would align the plots pixel by pixel, which for plots of different widths is not the same
        range.)"""
        self._follow = False
        source = next((p for p in self._plots() if p.vb is self.sender()), self.loss_plot)
        lo, hi = source.vb.viewRange()[0]
        for plot in self._plots():
            if plot is not source:
                plot.setXRange(lo, hi, padding=0)
        self._fit_y(keep=source)  # the other plots show what is in the new x range

    @Slot()
    def reset_view(self) -> None:
        """Follow the active run again, after any zoom or pan."""
        self._follow = True
        self._view_changed()

    @Slot(bool)
    def set_box_zoom(self, on: bool) -> None:
        """Left-drag draws a box to zoom into (on), or pans (off)."""
        mode = pg.ViewBox.RectMode if on else pg.ViewBox.PanMode
        for plot in self._plots():
            plot.vb.setMouseMode(mode)
        if self.zoom_button.isChecked() != on:
            self.zoom_button.setChecked(on)

    # ------------------------------------------------------------------ drawing

    @Slot()
    def redraw(self, force: bool = True) -> None:
        """Push every changed run to its curves (cheap when nothing changed). The timer calls it with
        force=False, which also waits out the paint budget."""
        if self._restyle_pending:
            self._restyle()
        # Every paint since the last redraw (the redraw's own and those it set off, such as auto-range)
        # counts against the budget.
        now = time.perf_counter()
        spent_ms = self.graphics.paint_ms_total - self._paint_ms_at_redraw
        wait_ms = min(PAINT_DUTY_FACTOR * spent_ms, MAX_PAINT_WAIT_MS)
        if not force and (now - self._last_redraw) * 1000 < wait_ms:
            return
        changed = False
        mode = self.x_mode
        for run in self.runs:
            curves = self._curves[id(run)]
            if curves.drawn_version == run.version:
                continue
            curves.drawn_version = run.version
            x = run.x(mode)
            changed = True
            if len(x) and not np.isfinite(x).any():  # a run without times on a time axis: nothing to place
                for item in curves.items():
                    item.setData([], [])
                continue
            loss = run.loss.view()
            smoothed = curves.smoother.update(loss)
            curves.raw.setData(x, loss)
            curves.ema.setData(x, smoothed)
            curves.lr.setData(x, run.lr.view())
            curves.grad.setData(x, run.grad_norm.view())
            curves.speed.setData(x, run.tokens_per_s.view())
            curves.val.setData(run.val_x(mode), run.val_loss.view())
        if changed:
            self._view_changed()
            self._last_redraw = now
            self._paint_ms_at_redraw = self.graphics.paint_ms_total

    @Slot()
    def _on_timer(self) -> None:
        self.redraw(force=False)

    def drawn_points(self, run: RunData | None = None) -> int:
        """How many points the smoothed loss curve of a run shows now."""
        run = run or self.current_run
        if run is None:
            return 0
        x, _ = self._curves[id(run)].ema.getData()
        return 0 if x is None else len(x)

    def drawn_val_points(self, run: RunData | None = None) -> int:
        run = run or self.current_run
        if run is None:
            return 0
        x, _ = self._curves[id(run)].val.getData()
        return 0 if x is None else len(x)

    def curves_of(self, run: RunData) -> RunCurves:
        return self._curves[id(run)]

    def _invalidate(self) -> None:
        for curves in self._curves.values():
            curves.drawn_version = -1

    @Slot(int)
    def _on_smoothing(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        for curves in self._curves.values():
            curves.smoother = DebiasedEMA(value / 100.0)
        self._invalidate()

    @Slot(bool)
    def _on_raw_toggled(self, on: bool) -> None:
        for run in self.runs:
            self._curves[id(run)].raw.setVisible(on and run.visible)
        self._update_legend()
        self._view_changed()  # the raw points spread wider than the smoothed ones: the y range fits them

    @Slot(bool)
    def _on_log_toggled(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self._fit_y()  # the old range is in the other scale's units

    @Slot(int)
    def _on_x_axis(self, index: int) -> None:
        self._x_mode = X_MODES[index]
        self._set_bottom_axes()
        self.crosshair.clear()
        self._invalidate()
        self._follow = True  # a zoom on the old axis means nothing on the new one
        self.redraw()
        self._view_changed()

    def _set_bottom_axes(self) -> None:
        """Every plot's bottom axis for the x mode (time axes write clock or elapsed times), with its title."""
        for plot in self._plots():
            axis = make_axis(self._x_mode)
            plot.setAxisItems({"bottom": axis})
            plot.showGrid(x=True, y=True, alpha=0.15)
            for name in ("left", "bottom"):
                # Grid lines at major ticks only: a third of the paint time of the default three levels.
                plot.getAxis(name).setStyle(maxTickLevel=0, showValues=not self._empty)
            axis.setLabel(self._x_mode.title)
        self._restyle_pending = True

    # ------------------------------------------------------------------ crosshair readout

    def _nearest_step(self, run: RunData, x: float) -> int:
        """The index of the run's step nearest to x (a value of the current x axis)."""
        xs = run.x(self.x_mode)
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
            i -= 1
        return i

    @Slot(object)
    def _on_clicked(self, event) -> None:
        run = self.active_run()
        x = self.crosshair.x_at(event.scenePos())
        if event.button() == Qt.MouseButton.LeftButton and x is not None and run is not None and run.num_steps:
            self.step_clicked.emit(int(run.step.view()[self._nearest_step(run, x)]))

    def values_at(self, x: float) -> str:
        """Rich text with the active run's values nearest to x (a value of the current x axis)."""
        run = self.active_run()
        if run is None or not run.num_steps:
            return " "
        i = self._nearest_step(run, x)
        curves = self._curves[id(run)]
        smoothed = curves.smoother.out.view()
        color = theme.readable(run.color, self.hover_label.palette().color(QPalette.ColorRole.Window)).name()
        parts = [f"<b style='color:{color}'>{html.escape(run.name)}</b>",  # a name from a file: text only
                 f"step <b>{int(run.step.view()[i]):,}</b>"]
        if self.x_mode != "step":
            parts.append(f"<b>{format_x(self._x_mode, run.x(self.x_mode)[i])}</b>")
        parts.append(f"loss <b>{run.loss.view()[i]:.4f}</b>")
        if i < len(smoothed):
            parts.append(f"smoothed <b>{smoothed[i]:.4f}</b>")
        if len(run.val_step):
            j = int(np.argmin(np.abs(run.val_step.view() - run.step.view()[i])))
            parts.append(f"val <b>{run.val_loss.view()[j]:.4f}</b> (step {int(run.val_step.view()[j]):,})")
        parts.append(f"lr <b>{run.lr.view()[i]:.2e}</b>")
        if math.isfinite(run.grad_norm.view()[i]):
            parts.append(f"grad norm <b>{run.grad_norm.view()[i]:.3g}</b>")
        parts.append(f"<b>{format_si(run.tokens_per_s.view()[i])}</b> tok/s")
        return " · ".join(parts)

    # ------------------------------------------------------------------ export

    def export_png(self, path: str | Path, width: int = 1600) -> None:
        """The plots as they are, without the crosshair; the legend names the visible runs."""
        self.redraw()
        with self.crosshair.hidden():
            exporter = ImageExporter(self.graphics.ci)
            exporter.parameters()["width"] = width
            exporter.export(str(path))

    def export_csv(self, path: str | Path) -> None:
        write_csv(path, self.runs, self.smoothing)

    @Slot()
    def _ask_export_png(self) -> None:
        path = dialogs.save_file(self, "Export plots as PNG", "training.png", "PNG image (*.png)")
        if path:
            self._export(self.export_png, path)

    @Slot()
    def _ask_export_csv(self) -> None:
        path = dialogs.save_file(self, "Export runs as CSV", "training.csv", "CSV table (*.csv)")
        if path:
            self._export(self.export_csv, path)

    def _export(self, fn, path: str) -> None:
        try:
            fn(path)
        except Exception as e:  # any failure (a full disk, a folder gone) is a message, never a crash
            dialogs.show_error(self, "Export failed", f"Could not write {path}: {getattr(e, 'strerror', None) or e}")
        else:
            dialogs.notify(self, f"Saved {path}")

    # ------------------------------------------------------------------ look

    def _restyle(self) -> None:
        self._restyle_pending = False
        theme.style_plot_widget(self.graphics)
        background = QColor(theme.plot_background())
        background.setAlpha(210)  # the legend over the curves: readable, yet they show through
        self.legend.setBrush(pg.mkBrush(background))
        self._empty_text.setColor(theme.muted_text_color())
        font = QFont()
        font.setPointSizeF(font.pointSizeF() * 1.05)
        self._empty_text.setFont(font)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle_pending = True
        super().changeEvent(event)
