"""Live training plots: loss (raw + smoothed + validation), learning rate and tokens/s.

Event batches only append to numpy buffers (RunData); a 15 Hz timer pushes changed runs to their
curves with `setData`, with clip-to-view and peak downsampling so long runs stay cheap. Every run
since the app started stays in the runs list, in its own colour, and can be hidden.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QEvent, Qt, QTimer, Slot
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import dialogs, theme
from app.formatting import format_si
from app.tabs.training.run_data import DebiasedEMA, RunData, write_csv
from app.tabs.training.runs_list import RunsList

REDRAW_MS = 66  # ~15 Hz
# Painting must not steal the training's CPU: after a redraw whose paints took t ms, wait at least
# PAINT_DUTY_FACTOR * t ms before the next one (at most ~2.5% of one core), however fast events arrive.
# 1.5 ms of painting keeps the full timer rate; 20 ms (a slow or busy machine) redraws about once a second.
PAINT_DUTY_FACTOR = 40
MAX_PAINT_WAIT_MS = 1500  # one slow paint (the first one loads fonts) must not freeze the plots for long


@dataclass
class _RunCurves:
    raw: pg.PlotDataItem
    ema: pg.PlotDataItem
    val: pg.PlotDataItem
    lr: pg.PlotDataItem
    speed: pg.PlotDataItem
    smoother: DebiasedEMA
    drawn_version: int = -1

    def items(self) -> list[pg.PlotDataItem]:
        return [self.raw, self.ema, self.val, self.lr, self.speed]


def _curve(color: str, *, width: float = 1.5, alpha: int = 255, dashed: bool = False,
           symbol: str | None = None) -> pg.PlotDataItem:
    c = QColor(color)
    c.setAlpha(alpha)
    pen = pg.mkPen(c, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
    item = pg.PlotDataItem(pen=pen, symbol=symbol, symbolSize=6, symbolPen=pen if symbol else None,
                           symbolBrush=pg.mkBrush(c) if symbol else None)
    if symbol is None:
        # Long dense curves: only draw what is visible, and at most a few points per pixel.
        item.setClipToView(True)
        item.setDownsampling(auto=True, method="peak")
    return item


class _TimedGraphics(pg.GraphicsLayoutWidget):
    """Adds up the time its paints take (the redraw budget depends on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.paint_ms_total = 0.0

    def paintEvent(self, event) -> None:
        start = time.perf_counter()
        super().paintEvent(event)
        self.paint_ms_total += (time.perf_counter() - start) * 1000


class TrainingPlots(QWidget):
    """Loss, learning rate and throughput of the current run and every earlier one."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs: list[RunData] = []
        self._curves: dict[int, _RunCurves] = {}
        self._x_tokens = False
        self._restyle_pending = False

        # ---- controls
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(60)
        self.smoothing_slider.setFixedWidth(120)
        self.smoothing_slider.setToolTip(
            "Smoothing of the training loss: an exponential moving average (bias-corrected, as TensorBoard).\n"
            "0 shows the raw values; 0.99 averages over roughly the last hundred steps.")
        self.smoothing_label = QLabel()
        self.smoothing_label.setMinimumWidth(32)
        self.raw_check = QCheckBox("Raw")
        self.raw_check.setChecked(True)
        self.raw_check.setToolTip("Also draw the unsmoothed loss of every step, faintly")
        self.log_check = QCheckBox("Log scale")
        self.log_check.setToolTip("Logarithmic y axis for the loss (early drops and late gains both visible)")
        self.x_combo = QComboBox()
        self.x_combo.addItems(["Steps", "Tokens seen"])
        self.x_combo.setToolTip("x axis: optimizer steps, or tokens the model has read so far")
        self.png_button = QToolButton()
        self.png_button.setText("PNG…")
        self.png_button.setToolTip("Save the plots as an image")
        self.csv_button = QToolButton()
        self.csv_button.setText("CSV…")
        self.csv_button.setToolTip("Save every run's numbers as a table")

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smoothing_slider)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(8)
        controls.addWidget(self.raw_check)
        controls.addWidget(self.log_check)
        controls.addSpacing(8)
        controls.addWidget(QLabel("x axis"))
        controls.addWidget(self.x_combo)
        controls.addStretch(1)
        controls.addWidget(QLabel("Export"))
        controls.addWidget(self.png_button)
        controls.addWidget(self.csv_button)

        # ---- plots
        self.graphics = _TimedGraphics()
        self.graphics.setMinimumHeight(260)
        self.loss_plot: pg.PlotItem = self.graphics.addPlot(row=0, col=0, colspan=2, title="Loss")
        self.lr_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=0, title="Learning rate")
        self.speed_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=1, title="Tokens / s")
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)
        for plot in self._plots():
            plot.showGrid(x=True, y=True, alpha=0.15)
            for name in ("left", "bottom"):
                # Grid lines at major ticks only: a third of the paint time of the default three levels.
                plot.getAxis(name).setStyle(maxTickLevel=0)
            plot.setMenuEnabled(True)
        self.lr_plot.getAxis("left").setWidth(52)
        self.loss_plot.getAxis("left").setWidth(52)
        self.speed_plot.getAxis("left").setWidth(52)
        self.legend = self.loss_plot.addLegend(offset=(-10, 10))
        self._empty_text = pg.TextItem("Press Start to train: the loss appears here as the model learns",
                                       anchor=(0.5, 0.5))
        self.loss_plot.addItem(self._empty_text, ignoreBounds=True)

        self._vlines = []
        for plot in self._plots():
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((128, 128, 128), width=1,
                                                                          style=Qt.PenStyle.DotLine))
            line.setVisible(False)
            plot.addItem(line, ignoreBounds=True)
            self._vlines.append(line)
        self._mouse_proxy = pg.SignalProxy(self.graphics.scene().sigMouseMoved, rateLimit=30,
                                           slot=self._on_mouse_moved)

        self.hover_label = QLabel(" ")
        self.hover_label.setTextFormat(Qt.TextFormat.RichText)
        self.hover_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.hover_label.setToolTip("Values of the latest visible run under the mouse")

        self.runs_list = RunsList()

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        left = QVBoxLayout()
        left.addWidget(self.graphics, 1)
        left.addWidget(self.hover_label)
        body.addLayout(left, 1)
        body.addWidget(self.runs_list)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addLayout(body, 1)

        self.smoothing_slider.valueChanged.connect(self._on_smoothing)
        self.raw_check.toggled.connect(self._on_raw_toggled)
        self.log_check.toggled.connect(self._on_log_toggled)
        self.x_combo.currentIndexChanged.connect(self._on_x_axis)
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
        return [self.loss_plot, self.lr_plot, self.speed_plot]

    @property
    def current_run(self) -> RunData | None:
        return self.runs[-1] if self.runs else None

    @property
    def smoothing(self) -> float:
        return self.smoothing_slider.value() / 100.0

    def start_run(self, name: str) -> RunData:
        """A new, empty run that becomes the current one."""
        return self.add_run(RunData(name, self._next_color()))

    def add_history(self, name: str, history: dict[str, Any]) -> RunData:
        """A finished run from a checkpoint's saved history."""
        return self.add_saved_run(RunData.from_history(name, "", history))

    def add_saved_run(self, run: RunData) -> RunData:
        """A finished run built beforehand (RunData.from_history), in the next free colour."""
        run.color = self._next_color()
        return self.add_run(run)

    def _next_color(self) -> str:
        used = {r.color for r in self.runs}
        for i in range(len(self.runs) + 1):
            if theme.run_color(i) not in used:
                return theme.run_color(i)
        return theme.run_color(len(self.runs))

    def add_run(self, run: RunData) -> RunData:
        self.runs.append(run)
        curves = _RunCurves(
            raw=_curve(run.color, width=1, alpha=70),
            ema=_curve(run.color, width=2.2),
            val=_curve(run.color, width=1.8, dashed=True, symbol="o"),
            lr=_curve(run.color, width=1.8),
            speed=_curve(run.color, width=1.2),
            smoother=DebiasedEMA(self.smoothing),
        )
        self.loss_plot.addItem(curves.raw)
        self.loss_plot.addItem(curves.ema)
        self.loss_plot.addItem(curves.val)
        self.lr_plot.addItem(curves.lr)
        self.speed_plot.addItem(curves.speed)
        curves.raw.setVisible(self.raw_check.isChecked())
        self._curves[id(run)] = curves
        self._set_legend(run, curves)
        self.runs_list.add(run)
        if self._empty_text.isVisible():
            self._show_empty(False)
        return run

    def remove_run(self, run: RunData) -> None:
        curves = self._curves.pop(id(run), None)
        if curves is not None:
            for item in curves.items():
                item.getViewBox() and item.getViewBox().removeItem(item)
        self.runs = [r for r in self.runs if r is not run]
        self.runs_list.remove(run)
        if self.runs:
            last = self.runs[-1]
            self._set_legend(last, self._curves[id(last)])
        else:
            self.legend.clear()
            self._show_empty(True)

    @Slot()
    def clear_earlier_runs(self) -> None:
        for run in self.runs[:-1]:
            self.remove_run(run)

    def clear(self) -> None:
        for run in list(self.runs):
            self.remove_run(run)

    def _show_empty(self, empty: bool) -> None:
        """No runs yet: a hint instead of meaningless 0..1 axes."""
        self._empty_text.setVisible(empty)
        for plot in self._plots():
            for name in ("left", "bottom"):
                plot.getAxis(name).setStyle(showValues=not empty)
            if empty:
                plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            else:
                plot.enableAutoRange()
        self._empty_text.setPos(0.5, 0.5)

    def _set_legend(self, run: RunData, curves: _RunCurves) -> None:
        self.legend.clear()
        self.legend.addItem(curves.ema, "train (smoothed)")
        self.legend.addItem(curves.raw, "train (raw)")
        self.legend.addItem(curves.val, "validation")

    @Slot(object, bool)
    def _on_run_visibility(self, key: int, visible: bool) -> None:
        for run in self.runs:
            if id(run) == key:
                run.visible = visible
                curves = self._curves[key]
                for c in curves.items():
                    c.setVisible(run.visible)
                curves.raw.setVisible(run.visible and self.raw_check.isChecked())

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
        for run in self.runs:
            curves = self._curves[id(run)]
            if curves.drawn_version == run.version:
                continue
            curves.drawn_version = run.version
            x = run.tokens_seen.view() if self._x_tokens else run.step.view()
            loss = run.loss.view()
            smoothed = curves.smoother.update(loss)
            curves.raw.setData(x, loss)
            curves.ema.setData(x, smoothed)
            curves.lr.setData(x, run.lr.view())
            # The first steps include warm-up work (compilation, allocation): their speed is not representative.
            curves.speed.setData(x, run.tokens_per_s.view())
            vx = run.val_tokens_seen.view() if self._x_tokens else run.val_step.view()
            curves.val.setData(vx, run.val_loss.view())
            changed = True
        if changed:
            self._range_speed_from_zero()
            self._last_redraw = now
            self._paint_ms_at_redraw = self.graphics.paint_ms_total

    def _range_speed_from_zero(self) -> None:
        """Throughput on a y axis from 0, so small wobbles do not look like big swings."""
        tops = [np.nanmax(r.tokens_per_s.view()) for r in self.runs if r.visible and r.num_steps]
        tops = [t for t in tops if np.isfinite(t) and t > 0]
        if tops:
            self.speed_plot.setYRange(0, max(tops) * 1.1, padding=0)

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

    @Slot(bool)
    def _on_log_toggled(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.loss_plot.enableAutoRange()

    @Slot(int)
    def _on_x_axis(self, index: int) -> None:
        self._x_tokens = index == 1
        label = "tokens seen" if self._x_tokens else "step"
        for plot in self._plots():
            plot.setLabel("bottom", label)
        self._invalidate()
        self.redraw()
        for plot in self._plots():
            plot.enableAutoRange()

    # ------------------------------------------------------------------ crosshair

    def _on_mouse_moved(self, args: tuple) -> None:
        pos = args[0]
        for plot in self._plots():
            if plot.sceneBoundingRect().contains(pos):
                x = plot.vb.mapSceneToView(pos).x()
                break
        else:
            for line in self._vlines:
                line.setVisible(False)
            return
        for line in self._vlines:
            line.setPos(x)
            line.setVisible(True)
        self.hover_label.setText(self.values_at(x))

    def values_at(self, x: float) -> str:
        """Rich text with the latest visible run's values nearest to x (a step or a token count)."""
        run = next((r for r in reversed(self.runs) if r.visible and r.num_steps), None)
        if run is None:
            return " "
        xs = run.tokens_seen.view() if self._x_tokens else run.step.view()
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
            i -= 1
        curves = self._curves[id(run)]
        smoothed = curves.smoother.out.view()
        parts = [f"<b style='color:{run.color}'>{html.escape(run.name)}</b>",  # a name from a file: text only
                 f"step <b>{int(run.step.view()[i]):,}</b>",
                 f"tokens <b>{format_si(run.tokens_seen.view()[i])}</b>",
                 f"loss <b>{run.loss.view()[i]:.4f}</b>"]
        if i < len(smoothed):
            parts.append(f"smoothed <b>{smoothed[i]:.4f}</b>")
        if len(run.val_step):
            vx = run.val_tokens_seen.view() if self._x_tokens else run.val_step.view()
            j = int(np.argmin(np.abs(vx - xs[i])))
            parts.append(f"val <b>{run.val_loss.view()[j]:.4f}</b> (step {int(run.val_step.view()[j]):,})")
        parts.append(f"lr <b>{run.lr.view()[i]:.2e}</b>")
        parts.append(f"<b>{format_si(run.tokens_per_s.view()[i])}</b> tok/s")
        return " · ".join(parts)

    # ------------------------------------------------------------------ export

    def export_png(self, path: str | Path, width: int = 1600) -> None:
        self.redraw()
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
        self._empty_text.setColor(theme.muted_text_color())
        font = QFont()
        font.setPointSizeF(font.pointSizeF() * 1.05)
        self._empty_text.setFont(font)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle_pending = True
        super().changeEvent(event)
