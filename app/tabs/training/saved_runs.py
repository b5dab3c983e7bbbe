"""The Training tab's saved runs: every run kept in the user's data folder (engine run logs), listed again at
the next start, in a table of their settings and final losses. Tick a run to overlay its curves on the plots;
delete runs (after asking); export them as TensorBoard event files when the optional `tensorboard` package is
installed (else that button is disabled and says why).

Reading the logs and the export are jobs (off the GUI thread, with progress); what the engine found wrong in a
log is one line in the status bar.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.tabs.training.loss_plot import TrainingPlots
from app.tabs.training.run_data import RunData
from app.worker import JobRunner
from engine import (
    Event,
    ProgressEvent,
    SavedRun,
    delete_run,
    export_tensorboard_job,
    hyperparameters,
    read_runs_job,
    runs_dir,
    tensorboard_problem,
)

# The final losses first after the name: they are what runs are compared by, and stay in view in a narrow window.
COLUMNS = ("Plot", "Run", "Steps", "Loss", "Val loss", "Date", "Model", "Tokenizer", "Corpus", "lr", "Batch", "Ended")
PLOT, NAME = 0, 1


@dataclass(frozen=True)
class SavedRunsRead(Event):
    """The saved runs, oldest first, and one line per log that could not be read in full."""

    runs: tuple[SavedRun, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RunsExported(Event):
    folder: str
    count: int


def read_saved_runs_job() -> Iterator[Event]:
    runs, warnings = yield from read_runs_job()
    yield SavedRunsRead(tuple(runs), tuple(warnings))


def export_runs_job(runs: list[SavedRun], folder: str) -> Iterator[Event]:
    folders = yield from export_tensorboard_job(runs, folder)
    yield RunsExported(folder, len(folders))


def _short(text: str, limit: int = 80) -> str:
    """A cell's text: a log may hold a very long path or name (the full one is in the Run tooltip)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "–"


def _model(run: SavedRun) -> str:
    c = run.model_config
    if not c:
        return "?"
    return f"{c.get('n_layers')} layers · {c.get('n_heads')} heads · emb {c.get('emb_dim')} · ctx {c.get('context_length')}"


def _cells(run: SavedRun) -> list[str]:
    h = hyperparameters(run)
    batch = f"{h['batch_size']} × {h.get('grad_accum', 1)}" if "batch_size" in h else "?"
    return ["", _short(run.name), f"{run.last_step:,}", _loss(run.final_loss), _loss(run.final_val_loss),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created)), _model(run), _short(run.tokenizer), _short(run.corpus),
            f"{h['lr']:g}" if "lr" in h else "?", batch, run.ended or "interrupted"]


class SavedRunsPanel(QWidget):
    """See the module docstring. Public: table, delete_button, export_button, refresh_button, runs, refresh(),
    set_overlaid(), delete_selected(), export_selected()."""

    def __init__(self, runner: JobRunner, plots: TrainingPlots, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.plots = plots
        self.runs: list[SavedRun] = []
        self._overlays: dict[str, RunData] = {}  # log path -> its curves on the plots

        title = QLabel("Saved runs")
        title.setObjectName("sectionTitle")
        self.info = QLabel("")
        self.info.setObjectName("mutedLabel")
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setToolTip(f"Every run, kept in {runs_dir()} (also those of `python -m engine train`).\n"
                              "Tick Plot to overlay a run's curves; select rows to delete or export them.")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(90)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the saved runs again")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete the selected runs' logs for good (asks first)")
        self.export_button = QPushButton("Export to TensorBoard…")
        self.tensorboard_problem = tensorboard_problem()
        self.export_button.setEnabled(self.tensorboard_problem is None)
        self.export_button.setToolTip(
            "Write the selected runs (all, if none is selected) as TensorBoard event files; view them with "
            "tensorboard --logdir FOLDER" if self.tensorboard_problem is None
            else f"Unavailable: {self.tensorboard_problem}")
        top = QHBoxLayout()
        top.addWidget(title)
        top.addWidget(self.info, 1)
        top.addWidget(self.refresh_button)
        top.addWidget(self.delete_button)
        top.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        self.export_reason: QLabel | None = None
        if self.tensorboard_problem is not None:
            reason = QLabel(f"TensorBoard export unavailable: {self.tensorboard_problem}")
            reason.setObjectName("mutedLabel")
            reason.setTextFormat(Qt.TextFormat.PlainText)
            reason.setWordWrap(True)
            layout.addWidget(reason)
            self.export_reason = reason

        self.refresh_button.clicked.connect(self.refresh)
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button.clicked.connect(self.export_selected)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self._update_buttons()
        self.refresh()

    # ------------------------------------------------------------------ listing

    @Slot()
    def refresh(self) -> None:
        if self.runner.running("saved-runs"):
            return
        self.info.setText("reading…")
        job = self.runner.start("saved-runs", read_saved_runs_job())
        job.events.connect(self._on_events)
        job.failed.connect(self._on_failed)

    @Slot(list)
    def _on_events(self, events: list) -> None:
        for event in events:
            match event:
                case SavedRunsRead():
                    self._show(list(event.runs))
                    self.info.setToolTip("\n".join(event.warnings))
                    if event.warnings:
                        more = f" (and {len(event.warnings) - 1} more)" if len(event.warnings) > 1 else ""
                        self.info.setText(f"{self.info.text()} · {event.warnings[0]}{more}")
                        dialogs.notify(self, f"Saved runs: {event.warnings[0]}{more}", 10000)
                case RunsExported():
                    self.info.setText(f"{len(self.runs)} runs · exported {event.count} to {event.folder}")
                    dialogs.notify(self, f"Exported {event.count} run(s): tensorboard --logdir {event.folder}", 10000)
                case ProgressEvent():
                    self.info.setText(event.message)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.info.setText(f"{len(self.runs)} runs · {message}")
        dialogs.notify(self, f"Saved runs: {message}", 10000)

    def _show(self, runs: list[SavedRun]) -> None:
        self.runs = runs
        kept = {str(r.path) for r in runs}
        for path in [p for p in self._overlays if p not in kept]:  # deleted meanwhile
            self.plots.remove_run(self._overlays.pop(path))
        self.table.blockSignals(True)
        self.table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            for col, text in enumerate(_cells(run)):
                item = QTableWidgetItem(text)
                if col == PLOT:
                    item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled |
                                  Qt.ItemFlag.ItemIsSelectable)
                    item.setCheckState(Qt.CheckState.Checked if str(run.path) in self._overlays
                                       else Qt.CheckState.Unchecked)
                    item.setToolTip("Overlay this run's curves on the plots")
                elif col == NAME:
                    item.setToolTip(f"{run.name}\n{run.corpus}\n{run.path}"
                                    + (f"\n{run.skipped} unreadable line(s) skipped" if run.skipped else ""))
                item.setData(Qt.ItemDataRole.UserRole, row)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        self.info.setText(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
        self._update_buttons()

    # ------------------------------------------------------------------ overlay

    def set_overlaid(self, row: int, on: bool) -> None:
        """Show (or hide) a saved run's curves on the plots."""
        run = self.runs[row]
        key = str(run.path)
        if on and key not in self._overlays:
            date = time.strftime("%m-%d %H:%M", time.localtime(run.created))
            self._overlays[key] = self.plots.add_saved_run(RunData.from_history(f"{run.name} ({date})", "",
                                                                                run.history()))
        elif not on and key in self._overlays:
            self.plots.remove_run(self._overlays.pop(key))
        item = self.table.item(row, PLOT)
        if item is not None and (item.checkState() == Qt.CheckState.Checked) != on:
            self.table.blockSignals(True)
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.table.blockSignals(False)

    @Slot(QTableWidgetItem)
    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == PLOT and 0 <= item.row() < len(self.runs):
            self.set_overlaid(item.row(), item.checkState() == Qt.CheckState.Checked)

    # ------------------------------------------------------------------ delete, export

    def _selected_rows(self) -> list[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    @Slot()
    def _update_buttons(self) -> None:
        self.delete_button.setEnabled(bool(self._selected_rows()))
        self.export_button.setEnabled(self.tensorboard_problem is None and bool(self.runs))

    @Slot()
    def delete_selected(self) -> None:
        rows = self._selected_rows()
        if not rows:
            return
        names = ", ".join(self.runs[r].name for r in rows[:3]) + (" …" if len(rows) > 3 else "")
        answer = QMessageBox.question(self, "Delete saved runs",
                                      f"Delete {len(rows)} saved run(s) for good? ({names})\nThis cannot be undone.",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                      QMessageBox.StandardButton.Cancel)
        if answer != QMessageBox.StandardButton.Yes:
            return
        for row in rows:
            self.set_overlaid(row, False)
            try:
                delete_run(self.runs[row])
            except OSError as e:
                dialogs.show_error(self, "Delete saved runs", str(e))
                break
        self.refresh()

    @Slot()
    def export_selected(self) -> None:
        if self.tensorboard_problem is not None or self.runner.running("tensorboard-export"):
            return
        runs = [self.runs[r] for r in self._selected_rows()] or list(self.runs)
        if not runs:
            return
        folder = dialogs.open_folder(self, "Export runs to TensorBoard: choose a folder")
        if not folder:
            return
        job = self.runner.start("tensorboard-export", export_runs_job(runs, folder))
        job.events.connect(self._on_events)
        job.failed.connect(self._on_failed)
