"""The "Export command" dialog: the torchrun line for the Training tab's settings, ready to copy, or saved to a
folder as `train.sh` with the files it needs (command_export.py), so that it runs as given."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.tabs.training.command_export import SCRIPT, TOKENIZER_FILE, command_for, write_export
from app.tabs.training.torchrun import Launch
from app.theme import mono_font
from engine import ModelConfig, Tokenizer, TrainConfig

EXPLANATION = (
    "Runs this training with PyTorch's torchrun: one process per GPU, data-parallel (DDP). "
    "<b>--batch-size is per GPU</b>, so the global batch is GPUs × machines × batch size × grad accumulation. "
    "On several machines, run the same line on each: they meet at the rendezvous address (the first machine). "
    "FSDP shards the model across GPUs, for models that do not fit one.")


class TorchrunDialog(QDialog):
    """tokenizer: a spec (char, bpe:N, gpt2, a file), the app's own Tokenizer (written next to the script), or
    None when fine-tuning. problem: why the line cannot run yet (e.g. an unsaved model to fine-tune): shown,
    and Copy / Save are off. Public: text, copy_button, save_button, note, command, save_to()."""

    def __init__(self, model: ModelConfig, train: TrainConfig, corpus: str, tokenizer: str | Tokenizer | None,
                 init: str | None, parent: QWidget | None = None, problem: str | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export torchrun command")
        self._args = (model, train, corpus, tokenizer, init)
        self._folder: Path | None = None  # where the files were saved, once they were
        self._problem = problem
        explanation = QLabel(EXPLANATION)
        explanation.setWordWrap(True)
        self.nproc = QSpinBox()
        self.nproc.setRange(1, 1024)
        self.nproc.setValue(8)
        self.nproc.setToolTip("Processes (one per GPU) on each machine")
        self.nnodes = QSpinBox()
        self.nnodes.setRange(1, 4096)
        self.nnodes.setToolTip("Machines taking part; more than one adds rendezvous flags")
        self.endpoint = QLineEdit("HOST:29500")
        self.endpoint.setToolTip("host:port of the first machine, reachable from all others")
        self.fsdp = QCheckBox("Shard the model with FSDP (--fsdp)")
        self.out = QLineEdit("model.safetensors")
        self.out.setToolTip("Checkpoint written by rank 0 (open it in the app afterwards)")
        form = QFormLayout()
        form.addRow("GPUs per machine", self.nproc)
        form.addRow("Machines", self.nnodes)
        form.addRow("Rendezvous", self.endpoint)
        form.addRow("Output file", self.out)
        form.addRow("", self.fsdp)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)

        self.text.setFont(mono_font())
        self.text.setMinimumSize(680, 120)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)  # paths
        self.note.setObjectName("mutedLabel")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        self.save_button = buttons.addButton("Save to folder…", QDialogButtonBox.ButtonRole.ActionRole)
        self.save_button.setToolTip(f"Write {SCRIPT} (the line) and the files it needs into a folder: "
                                    "run it there, or copy the folder to a cluster")
        self.save_button.clicked.connect(self._ask_folder)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(explanation)
        layout.addLayout(form)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.note)
        layout.addWidget(buttons)
        for w in (self.nproc, self.nnodes):
            w.valueChanged.connect(self._update)
        for w in (self.endpoint, self.out):
            w.textChanged.connect(self._update)
        self.fsdp.toggled.connect(self._update)
        self._update()

    def _launch(self) -> Launch:
        return Launch(nproc_per_node=self.nproc.value(), nnodes=self.nnodes.value(),
                      rdzv_endpoint=self.endpoint.text().strip() or "HOST:29500", fsdp=self.fsdp.isChecked())

    def _out(self) -> str:
        return self.out.text().strip() or "model.safetensors"

    @property
    def command(self) -> str:
        model, train, corpus, tokenizer, init = self._args
        return command_for(model, train, corpus=corpus, tokenizer=tokenizer, init=init, out=self._out(),
                           launch=self._launch(), folder=self._folder)

    @property
    def needs_files(self) -> bool:
        """The line names a file only the app has until it is saved (the app's own tokenizer)."""
        model, train, corpus, tokenizer, init = self._args
        return isinstance(tokenizer, Tokenizer) and not init

    @Slot()
    def _update(self) -> None:
        self.endpoint.setEnabled(self.nnodes.value() > 1)
        self.text.setPlainText(self.command)
        self.copy_button.setText("Copy")
        self.copy_button.setEnabled(self._problem is None)
        self.save_button.setEnabled(self._problem is None)
        if self._problem is not None:
            self.note.setText(f"Cannot export yet: {self._problem}")
        elif self._folder is not None:
            self.note.setText(f"Saved in {self._folder}: run sh {self._folder / SCRIPT} (it works in its own folder, "
                              f"so --out lands there), or copy the line as it is now.")
        elif self.needs_files:
            self.note.setText(f"This run uses the app's own tokenizer: Save to folder… writes it as {TOKENIZER_FILE} "
                              f"next to {SCRIPT}, and the line then names that file.")
        else:
            self.note.setText("The line runs as it is; Save to folder… also writes it as a script.")

    @Slot()
    def _ask_folder(self) -> None:
        folder = dialogs.open_folder(self, "Save the training command to a folder")
        if folder:
            self.save_to(folder)

    def save_to(self, folder: str | Path) -> Path | None:
        """Write the script and its files into `folder`; the shown line then names them. None (and an error
        dialog) when that fails."""
        model, train, corpus, tokenizer, init = self._args
        try:
            script = write_export(folder, model, train, corpus=corpus, tokenizer=tokenizer, init=init,
                                  out=self._out(), launch=self._launch())
        except (OSError, ValueError) as e:
            dialogs.show_error(self, "Save the training command", str(e))
            return None
        self._folder = script.parent
        self._update()
        return script

    @Slot()
    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.command)
        self.copy_button.setText("Copied")
