"""The Training tab's run controls: Start / Pause / Stop / Export command, the progress bar, the
throughput line and a line of news about the run.

The tab decides what happens; this panel only shows it. Step events come dozens of times a second,
but the progress bar repaints at once on every change: the latest step is shown at most every
STATS_INTERVAL_S (and whenever the run pauses or ends, with `flush`).
"""
from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from app.formatting import format_si
from engine import StartedEvent, StepEvent

STATS_INTERVAL_S = 0.25  # how often the progress bar and the throughput line change while training
START_TIP = "Train with these settings (the app keeps working meanwhile)"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunPanel(QWidget):
    """Public: start_button, pause_button, stop_button, command_button, progress, stats_label, message_label."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._total_steps = 0
        self._last_val: float | None = None
        self._pending_step: StepEvent | None = None  # the latest step not shown yet
        self._step_shown_at = 0.0

        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("primaryButton")
        self.start_button.setToolTip(START_TIP)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold training after the current step; Resume goes on exactly")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the run at once (within the current micro-batch), with no last "
                                    "evaluation; the model trained so far becomes the current model")
        self.command_button = QPushButton("Export command…")
        self.command_button.setToolTip("The torchrun command that runs this training on one or more GPUs / "
                                       "machines, to copy to a cluster")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setMinimumWidth(220)
        self.stats_label = QLabel("")
        self.stats_label.setObjectName("statsLabel")
        self.stats_label.setTextFormat(Qt.TextFormat.RichText)
        self.stats_label.setToolTip("Throughput, model FLOPs utilisation (share of the device's measured peak "
                                    "spent on the model's math) and the latest losses")
        self.message_label = QLabel("")
        self.message_label.setTextFormat(Qt.TextFormat.PlainText)  # may quote tokenizer and file names
        self.message_label.setObjectName("mutedLabel")
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.show_ready()

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.stop_button)
        buttons.addSpacing(10)
        buttons.addWidget(self.progress, 1)
        buttons.addSpacing(10)
        buttons.addWidget(self.command_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.stats_label)
        status_row.addStretch(1)
        status_row.addWidget(self.message_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addLayout(status_row)

    def set_controls(self, *, start_problem: str | None, running: bool, stopping: bool) -> None:
        self.start_button.setEnabled(start_problem is None)
        self.start_button.setToolTip(f"Cannot start: {start_problem}" if start_problem else START_TIP)
        self.pause_button.setEnabled(running and not stopping)
        self.stop_button.setEnabled(running and not stopping)
        if not running:
            self.pause_button.setText("Pause")

    def set_message(self, text: str, tip: str = "") -> None:
        self.message_label.setText(text)
        if tip:
            self.message_label.setToolTip(tip)

    # ------------------------------------------------------------------ the run's stages

    def show_ready(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Ready")

    def clear_run_status(self) -> None:
        """Another model was opened: what the bar and the lines said about the last run no longer applies."""
        self._total_steps, self._last_val, self._pending_step = 0, None, None
        self.stats_label.setText("")
        self.message_label.setText("")
        self.message_label.setToolTip("")
        self.show_ready()

    def show_preparing(self, message: str = "") -> None:
        """Busy until the trainer says how many steps."""
        self.progress.setRange(0, 0)
        self.progress.setFormat(message or "Preparing…")

    def begin(self) -> None:
        self._total_steps, self._last_val, self._pending_step = 0, None, None
        self.stats_label.setText("")
        self.show_preparing()

    def show_started(self, event: StartedEvent) -> None:
        self._total_steps = event.total_steps
        self.progress.setRange(0, event.total_steps)
        self.progress.setValue(event.start_step)
        self.progress.setFormat(self._progress_text(event.start_step, None))
        self.set_message(f"{event.device} · {event.precision}", event.device)

    def show_eval(self, step: int, val_loss: float, *, step_pending: bool) -> None:
        self._last_val = val_loss
        if not step_pending and self._total_steps:
            self.progress.setFormat(self._progress_text(step, None))

    def add_step(self, event: StepEvent) -> None:
        """The latest step: shown now, or at the next flush if one was shown less than STATS_INTERVAL_S ago."""
        self._pending_step = event
        if time.monotonic() - self._step_shown_at >= STATS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Show the latest step that is not on screen yet."""
        if self._pending_step is not None:
            self._show_step(self._pending_step)
            self._pending_step = None
            self._step_shown_at = time.monotonic()

    def show_ended(self, step: int | None) -> None:
        """The run is over: the bar shows the last step (or Ready when no step was taken)."""
        self.flush()
        if step is not None:
            self.progress.setValue(min(step, self.progress.maximum()) if self.progress.maximum() else 0)
        if self.progress.maximum() == 0:
            self.show_ready()

    def _progress_text(self, step: int, eta: float | None) -> str:
        text = f"step {step:,} / {self._total_steps:,}"
        if eta is not None and step < self._total_steps:
            text += f" · ETA {format_duration(eta)}"
        return text

    def _show_step(self, event: StepEvent) -> None:
        self._total_steps = event.total_steps
        if self.progress.maximum() != event.total_steps:
            self.progress.setRange(0, event.total_steps)
        self.progress.setValue(event.step)
        self.progress.setFormat(self._progress_text(event.step, event.eta_s))
        parts = [f"<b>{format_si(event.tokens_per_s)}</b> tokens/s"]
        if event.mfu > 0:
            parts.append(f"MFU <b>{100 * event.mfu:.1f}%</b>")
        parts.append(f"loss <b>{event.loss:.4f}</b>")
        if self._last_val is not None:
            parts.append(f"val <b>{self._last_val:.4f}</b>")
        parts.append(f"elapsed {format_duration(event.elapsed_s)}")
        self.stats_label.setText(" · ".join(parts))
