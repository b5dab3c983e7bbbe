"""Small dialogs, file pickers and status messages, in one place so every part of the app asks and tells
the same way (`notify` is the one way to post a line in the status bar).

File dialogs remember the last folder; tests replace `QFileDialog.getOpenFileName` /
`getSaveFileName` / `getExistingDirectory` and `QMessageBox.critical` / `warning` / `question` with monkeypatch.
Messages are always shown as plain text: they often hold names taken from files.
"""
from __future__ import annotations

import html
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


def as_plain(message: str, limit: int = 2000) -> str:
    """A message for a QMessageBox that is always shown as plain text (it may hold names from files).

    The static QMessageBox functions guess the format, and render anything that looks like HTML as HTML;
    text with markup characters is therefore escaped and wrapped so it is shown literally."""
    message = str(message)
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    if "<" not in message and "&" not in message:
        return message
    return "<p>" + html.escape(message, quote=False).replace("\n", "<br>") + "</p>"


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.critical(parent, title, as_plain(message))


def show_warning(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.warning(parent, title, as_plain(message))


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


def notify(widget: QWidget, message: str, ms: int = 6000) -> bool:
    """A line for the user in the window's status bar, for `ms` milliseconds. False when the widget is
    not in a main window (a tab shown on its own): the caller may show the line itself."""
    window = widget.window()
    if not isinstance(window, QMainWindow):
        return False
    window.statusBar().showMessage(message, ms)
    return True
