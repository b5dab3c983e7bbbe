"""The "Export command" dialog: the torchrun line for the Training tab's settings, ready to copy."""
from __future__ import annotations

from PySide6.QtCore import Slot
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

from app.tabs.training.torchrun import Launch, torchrun_command
from app.theme import mono_font
from engine import ModelConfig, TrainConfig

EXPLANATION = (
    "Runs this training with PyTorch's torchrun: one process per GPU, data-parallel (DDP). "
    "<b>--batch-size is per GPU</b>, so the global batch is GPUs × machines × batch size × grad accumulation. "
    "On several machines, run the same line on each: they meet at the rendezvous address (the first machine). "
    "FSDP shards the model across GPUs, for models that do not fit one.")


class TorchrunDialog(QDialog):
    def __init__(self, model: ModelConfig, train: TrainConfig, corpus: str, tokenizer: str | None,
                 init: str | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export torchrun command")
        self._args = (model, train, corpus, tokenizer, init)
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
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(explanation)
        layout.addLayout(form)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        for w in (self.nproc, self.nnodes):
            w.valueChanged.connect(self._update)
        for w in (self.endpoint, self.out):
            w.textChanged.connect(self._update)
        self.fsdp.toggled.connect(self._update)
        self._update()

    @property
    def command(self) -> str:
        model, train, corpus, tokenizer, init = self._args
        launch = Launch(nproc_per_node=self.nproc.value(), nnodes=self.nnodes.value(),
                        rdzv_endpoint=self.endpoint.text().strip() or "HOST:29500", fsdp=self.fsdp.isChecked())
        return torchrun_command(model, train, corpus=corpus, tokenizer=tokenizer, init=init,
                                out=self.out.text().strip() or "model.safetensors", launch=launch)

    @Slot()
    def _update(self) -> None:
        self.endpoint.setEnabled(self.nnodes.value() > 1)
        self.text.setPlainText(self.command)
        self.copy_button.setText("Copy")

    @Slot()
    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.command)
        self.copy_button.setText("Copied")
