"""File ▸ Open model…: the models already on this machine (the Hugging Face cache, read offline; GGUF files of
LM Studio, Ollama and the folders the user adds here, kept in the settings as "gguf_folders"), a folder of one's
own, or a download from the hub.

Everything slow runs as a job on the window's JobRunner, never on the GUI thread: reading the cache (it opens
every safetensors header) and downloading (engine.download_model_job, with byte progress and a cancel flag the
engine polls). Errors (offline, gated, missing, bad token, cut-off download) show as one line in the dialog.
The dialog only *chooses*: `chosen` is the folder (or checkpoint) to open, and the window opens it.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.formatting import format_bytes, format_params
from app.settings import Settings
from app.worker import Job, JobRunner
from engine import HubDownloadProgress, ModelEntry, download_model_job, list_models, supported_family

LIST_JOB = "list-models"
DOWNLOAD_JOB = "download-model"
COLUMNS = ("Model", "Family", "Parameters", "Size on disk", "Where")
GGUF_FOLDERS_KEY = "gguf_folders"
ERROR_STYLE = "color: #D55E00"


@dataclass(frozen=True)
class ModelsListed:
    entries: tuple[ModelEntry, ...]


@dataclass(frozen=True)
class Downloaded:
    folder: Path


def list_models_job(gguf_folders: list[str]) -> Iterator[ModelsListed]:
    yield ModelsListed(tuple(list_models(gguf_folders)))


def gguf_folders() -> list[str]:
    """The folders of GGUF files the user added (settings)."""
    raw = Settings().value(GGUF_FOLDERS_KEY, [])
    return [raw] if isinstance(raw, str) and raw else [str(p) for p in (raw or []) if p]


def where(entry: ModelEntry) -> str:
    """Where a model is: the Hugging Face cache, or LM Studio / Ollama / a folder with the file's main tensor type."""
    if entry.kind != "gguf":
        return "HF cache"
    quant = entry.details.get("quantization") or {}
    return f"{entry.details.get('place', 'folder')} · {next(iter(quant), '?')}"


def download_job(repo_id: str, cancel: threading.Event) -> Iterator[object]:
    """Engine progress events, then Downloaded; the engine polls `cancel` between (and inside) files."""
    for item in download_model_job(repo_id, cancel=cancel.is_set):
        yield Downloaded(item) if isinstance(item, Path) else item


class OpenModelDialog(QDialog):
    def __init__(self, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Open model")
        self.resize(760, 480)
        self.runner = runner
        self.entries: list[ModelEntry] = []
        self.chosen: Path | None = None
        self.chosen_name = ""
        self._select_after_list: str | None = None
        self._list_job: Job | None = None
        self._list_again = False
        self._download: Job | None = None
        self._cancel = threading.Event()
        self._downloading_repo = ""

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setToolTip("Models in your Hugging Face cache (HF_HOME / HF_HUB_CACHE) and GGUF files of LM Studio, "
                              "Ollama and your folders. Double-click one to open it; greyed ones are of a family this "
                              "version can't run yet.")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in range(1, len(COLUMNS)):
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(lambda *_: self.open_selected())
        self.list_status = QLabel()
        self.list_status.setWordWrap(True)

        self.repo = QLineEdit()
        self.repo.setPlaceholderText("Repo id, e.g. openai-community/gpt2")
        self.repo.setToolTip("A Hugging Face repo id (owner/name). Only the files the app needs are fetched: "
                             "config and tokenizer JSON, chat template, safetensors weights. Gated models need a "
                             "token in HF_TOKEN.")
        self.repo.returnPressed.connect(self.start_download)
        self.repo.textChanged.connect(self._update_buttons)
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Fetch this model into the Hugging Face cache (it then appears in the list)")
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the download; the files already complete stay in the cache")
        self.cancel_button.clicked.connect(self.cancel_download)
        self.progress = QProgressBar()
        self.progress.setToolTip("Bytes downloaded of all the files the model needs")
        self.progress.setTextVisible(True)
        self.download_status = QLabel()
        self.download_status.setWordWrap(True)
        download_row = QHBoxLayout()
        download_row.addWidget(QLabel("Download"))
        download_row.addWidget(self.repo, 1)
        download_row.addWidget(self.download_button)
        download_row.addWidget(self.cancel_button)

        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("A Hugging Face model folder of your own: config.json, safetensors weights "
                                      "and a tokenizer")
        self.folder_button.clicked.connect(self.choose_folder)
        self.gguf_button = QPushButton("Add GGUF folder…")
        self.gguf_button.setToolTip("List the .gguf files of a folder of yours too (remembered; LM Studio's and "
                                    "Ollama's folders are always listed)")
        self.gguf_button.clicked.connect(self.add_gguf_folder)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the Hugging Face cache and the GGUF folders again")
        self.refresh_button.clicked.connect(self.refresh)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Close)
        self.open_button = self.buttons.button(QDialogButtonBox.StandardButton.Open)
        self.open_button.setToolTip("Open the selected model")
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setToolTip("Close without opening a model")
        self.buttons.accepted.connect(self.open_selected)
        self.buttons.rejected.connect(self.reject)
        bottom = QHBoxLayout()
        bottom.addWidget(self.folder_button)
        bottom.addWidget(self.gguf_button)
        bottom.addWidget(self.refresh_button)
        bottom.addStretch(1)
        bottom.addWidget(self.buttons)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Models on this computer</b>"))
        layout.addWidget(self.table, 1)
        layout.addWidget(self.list_status)
        layout.addSpacing(6)
        layout.addLayout(download_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.download_status)
        layout.addLayout(bottom)
        self._set_downloading(False)
        self.refresh()

    # ------------------------------------------------------------------ the list

    @Slot()
    def refresh(self) -> None:
        if self._list_job is not None:
            self._list_again = True  # e.g. a folder was added while the list was being read
            return
        self._list_again = False
        self.list_status.setText("Reading the Hugging Face cache and the GGUF folders…")
        self.refresh_button.setEnabled(False)
        self._list_job = self.runner.start(LIST_JOB, list_models_job(gguf_folders()))
        self._list_job.events.connect(self._on_list_events)
        self._list_job.failed.connect(self._on_list_failed)
        self._list_job.finished.connect(self._on_list_finished)

    @Slot(list)
    def _on_list_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, ModelsListed):
                self.show_entries(list(event.entries))

    @Slot(str)
    def _on_list_failed(self, message: str) -> None:
        self.list_status.setText(f"Cannot read the Hugging Face cache: {message}")

    @Slot()
    def _on_list_finished(self) -> None:
        self._list_job = None
        self.refresh_button.setEnabled(True)
        if self._list_again:
            self.refresh()

    def show_entries(self, entries: list[ModelEntry]) -> None:
        self.entries = entries
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            opens = supported_family(entry.family)
            cells = (entry.name, entry.family or "?", format_params(entry.n_params), format_bytes(entry.size_bytes),
                     where(entry))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(entry.path) if opens else
                                f"model_type {entry.family!r} can't be opened by this version yet")
                if col in (2, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if not opens:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
                self.table.setItem(row, col, item)
        files = sum(e.kind == "gguf" for e in entries)
        self.list_status.setText(f"{len(entries)} model{'s' if len(entries) != 1 else ''}: "
                                 f"{len(entries) - files} in the Hugging Face cache, {files} GGUF file"
                                 f"{'s' if files != 1 else ''}"
                                 if entries else "No models in your Hugging Face cache or GGUF folders yet: download "
                                                 "one below, or open a folder.")
        if self._select_after_list is not None:
            names = [e.name for e in entries]
            if self._select_after_list in names:
                self.table.selectRow(names.index(self._select_after_list))
            self._select_after_list = None
        self._update_buttons()

    def selected_entry(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.entries):
            return None
        return self.entries[rows[0].row()]

    @Slot()
    def _update_buttons(self) -> None:
        entry = self.selected_entry()
        self.open_button.setEnabled(entry is not None and supported_family(entry.family))
        self.download_button.setEnabled(self._download is None and bool(self.repo.text().strip()))

    @Slot()
    def open_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or not supported_family(entry.family):
            return
        self.chosen, self.chosen_name = entry.path, entry.name
        self.accept()

    @Slot()
    def choose_folder(self) -> None:
        folder = dialogs.open_folder(self, "Open a Hugging Face model folder")
        if folder:
            self.chosen, self.chosen_name = Path(folder), Path(folder).name
            self.accept()

    @Slot()
    def add_gguf_folder(self) -> None:
        folder = dialogs.open_folder(self, "Add a folder of GGUF files")
        if not folder:
            return
        folders = gguf_folders()
        if folder not in folders:
            Settings().set_value(GGUF_FOLDERS_KEY, [*folders, folder])
        self.refresh()

    # ------------------------------------------------------------------ downloading

    @Slot()
    def start_download(self) -> None:
        repo_id = self.repo.text().strip()
        if not repo_id or self._download is not None:
            return
        self._cancel = threading.Event()
        self.progress.setRange(0, 0)  # busy until the file list says how many bytes
        self.download_status.setStyleSheet("")
        self.download_status.setText(f"Asking the hub for {repo_id}…")
        self._download = self.runner.start(DOWNLOAD_JOB, download_job(repo_id, self._cancel))
        self._download.events.connect(self._on_download_events)
        self._download.failed.connect(self._on_download_failed)
        self._download.finished.connect(self._on_download_finished)
        self._downloading_repo = repo_id
        self._set_downloading(True)

    @Slot()
    def cancel_download(self) -> None:
        if self._download is not None:
            self._cancel.set()  # the engine stops mid-file
            self.download_status.setText("Cancelling…")

    def is_downloading(self) -> bool:
        return self._download is not None

    @Slot(list)
    def _on_download_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, HubDownloadProgress) and event.total > 0:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * min(1.0, event.done / event.total)))
                self.progress.setFormat(f"{format_bytes(event.done)} of {format_bytes(event.total)} · "
                                        f"{event.files_done}/{event.n_files} files")
                self.download_status.setText(event.message)
            elif isinstance(event, Downloaded):
                self.progress.setRange(0, 1000)
                self.progress.setValue(1000)
                self.download_status.setText(f"Downloaded {self._downloading_repo}")
                self._select_after_list = self._downloading_repo
                self.refresh()

    @Slot(str)
    def _on_download_failed(self, message: str) -> None:
        self.download_status.setStyleSheet(ERROR_STYLE)
        self.download_status.setText(message)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("")

    @Slot()
    def _on_download_finished(self) -> None:
        self._download = None
        self._set_downloading(False)

    def _set_downloading(self, on: bool) -> None:
        self.cancel_button.setEnabled(on)
        self.repo.setEnabled(not on)
        self.progress.setVisible(on or self.progress.value() > 0)
        self._update_buttons()

    def reject(self) -> None:
        """Closing while a download runs cancels it (what was complete stays in the cache)."""
        if self._download is not None:
            self._cancel.set()
            self._download.stop()
        super().reject()
