"""Small dialogs and file pickers, in one place so every part of the app asks the same way.

File dialogs remember the last folder; tests replace `QFileDialog.getOpenFileName` /
`getSaveFileName` / `getExistingDirectory` and `QMessageBox.critical` / `question` with monkeypatch.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QWidget

from app.settings import Settings

CHECKPOINT_FILTER = "Checkpoints (*.safetensors);;All files (*)"
TEXT_FILTER = "Text (*.txt *.md *.py *.text *.csv *.json);;All files (*)"


def _last_dir() -> str:
    return Settings().value("last_dir", str(Path.home()))


def _remember_dir(path: str) -> None:
    if path:
        Settings().set_value("last_dir", str(Path(path).parent))


def open_file(parent: QWidget | None, title: str, file_filter: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, title, _last_dir(), file_filter)
    _remember_dir(path)
    return path or None


def save_file(parent: QWidget | None, title: str, default_name: str, file_filter: str) -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, title, str(Path(_last_dir()) / default_name), file_filter)
    _remember_dir(path)
    return path or None


def open_folder(parent: QWidget | None, title: str) -> str | None:
    path = QFileDialog.getExistingDirectory(parent, title, _last_dir())
    if path:
        Settings().set_value("last_dir", path)
    return path or None


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.critical(parent, title, message)


def ask_save_changes(parent: QWidget | None, name: str, running: bool = False) -> str:
    """"save", "discard" or "cancel" for unsaved work (and a run that is still going)."""
    if running:
        text = f"Training is still running. Stop it and save the model ({name}) first?"
    else:
        text = f"The model {name} has changes that are not saved. Save them first?"
    buttons = (QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
               | QMessageBox.StandardButton.Cancel)
    answer = QMessageBox.question(parent, "Unsaved model", text, buttons, QMessageBox.StandardButton.Save)
    if answer == QMessageBox.StandardButton.Save:
        return "save"
    if answer == QMessageBox.StandardButton.Discard:
        return "discard"
    return "cancel"


def status(widget: QWidget, message: str, ms: int = 6000) -> None:
    """A message in the window's status bar (if the widget sits in a main window)."""
    window = widget.window()
    if isinstance(window, QMainWindow):
        window.statusBar().showMessage(message, ms)
