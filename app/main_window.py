"""The main window: four tabs around one shared AppState and JobRunner, menus, status bar, files.

Tabs never talk to each other; they listen to the state. This window owns what spans them: opening,
saving and importing models (each read in a job, so the window never stalls), drag and drop,
the status bar, persistence of geometry and choices, and a clean exit while a job runs.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QEventLoop, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QFrame, QLabel, QMainWindow, QMessageBox, QTabWidget

from app import dialogs, theme
from app.formatting import format_params
from app.jobs.model_io import (
    DEFAULT_MODEL,
    ModelLoadedEvent,
    ModelSavedEvent,
    default_model_job,
    import_hf_job,
    new_model_job,
    open_checkpoint_job,
    open_source_job,
    save_checkpoint_job,
)
from app.open_model_dialog import OpenModelDialog
from app.settings import Settings
from app.state import AppState
from app.tabs.attention.tab import AttentionTab
from app.tabs.generation.tab import GenerationTab
from app.tabs.inside.tab import InsideTab
from app.tabs.tokenizer.tab import TokenizerTab
from app.tabs.training.tab import TrainingTab
from app.worker import JobRunner, error_message
from engine import ProgressEvent, device_name, pick_device

APP_NAME = "LLM Playground"
TAB_TITLES = ("Training", "Attention", "Tokenizer", "Generation", "Inside")
CHECKPOINT_SUFFIXES = (".safetensors",)


def _status_label(tip: str) -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)  # names come from files: never rendered as HTML
    label.setToolTip(tip)
    label.setContentsMargins(6, 0, 6, 0)
    return label


class MainWindow(QMainWindow):
    def __init__(self, *, load_default: bool = True):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.state = AppState(self)
        self.runner = JobRunner(self)
        self._closing = False
        self._saving = False  # a save is running (in the worker, with a local event loop waiting for it)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.training_tab = TrainingTab(self.state, self.runner)
        self.attention_tab = AttentionTab(self.state, self.runner)
        self.tokenizer_tab = TokenizerTab(self.state, self.runner)
        self.generation_tab = GenerationTab(self.state, self.runner)
        self.inside_tab = InsideTab(self.state, self.runner)
        for tab, title in zip((self.training_tab, self.attention_tab, self.tokenizer_tab, self.generation_tab,
                               self.inside_tab), TAB_TITLES):
            self.tabs.addTab(tab, title)
        self.setCentralWidget(self.tabs)

        self._build_status_bar()
        self._build_menus()
        self._connect()
        self._restore_settings()
        self._refresh_status()
        if load_default:
            QTimer.singleShot(0, self.load_default_model)

    # ================================================================== construction

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = _status_label("Where training runs (the Training tab's Device setting)")
        self.params_label = _status_label("Parameters of the current model")
        self.tokenizer_label = _status_label("Tokenizer of the current model")
        self.file_label = _status_label("The current model's file (* = changes not saved)")
        for i, label in enumerate((self.device_label, self.params_label, self.tokenizer_label, self.file_label)):
            if i:
                line = QFrame()
                line.setFrameShape(QFrame.Shape.VLine)
                line.setFrameShadow(QFrame.Shadow.Sunken)
                bar.addPermanentWidget(line)
            bar.addPermanentWidget(label)
        self._set_device("auto")

    def _action(self, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self.new_action = self._action("&New model", self.new_model, QKeySequence.StandardKey.New,
                                       "Fresh untrained weights with the Training tab's shape and the current "
                                       "tokenizer")
        self.open_action = self._action("&Open checkpoint…", lambda: self.open_checkpoint(), "Ctrl+O",
                                        "Open a .safetensors checkpoint")
        self.open_model_action = self._action("Open &model…", self.open_model_dialog, "Ctrl+Shift+O",
                                              "A model from your Hugging Face cache, a model folder, or a download")
        self.save_action = self._action("&Save", self.save, "Ctrl+S", "Save the current model")
        self.save_as_action = self._action("Save &as…", self.save_as, QKeySequence.StandardKey.SaveAs,
                                           "Save the current model to a new file")
        self.import_action = self._action("&Import GPT-2 (Hugging Face folder)…", lambda: self.import_hf(),
                                          tip="A Hugging Face model folder (config.json, safetensors weights, "
                                              "tokenizer.json or vocab.json + merges.txt) as a new fp32 model")
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        menu.addAction(self.new_action)
        menu.addAction(self.open_action)
        menu.addAction(self.open_model_action)
        self.recent_menu = menu.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        menu.addSeparator()
        menu.addAction(self.save_action)
        menu.addAction(self.save_as_action)
        menu.addSeparator()
        menu.addAction(self.import_action)
        menu.addSeparator()
        menu.addAction(self.quit_action)

        view = self.menuBar().addMenu("&View")
        for i, title in enumerate(TAB_TITLES):
            view.addAction(self._action(title, lambda _=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}"))
        view.addSeparator()
        theme_menu = view.addMenu("Theme")
        self.theme_group = QActionGroup(self)
        for name in theme.THEMES:
            action = QAction(name.capitalize(), self, checkable=True)
            action.setData(name)
            action.triggered.connect(lambda _=False, n=name: self.set_theme(n))
            self.theme_group.addAction(action)
            theme_menu.addAction(action)

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("&About", self._about))

    def _connect(self) -> None:
        self.state.model_changed.connect(self._refresh_status)
        self.state.tokenizer_changed.connect(self._refresh_status)
        self.state.path_changed.connect(self._refresh_status)
        self.training_tab.device_changed.connect(self._set_device)
        self.training_tab.running_changed.connect(self._on_running_changed)

    # ================================================================== status

    @Slot()
    def _refresh_status(self) -> None:
        model, tokenizer = self.state.model, self.state.tokenizer
        if model is None:
            self.params_label.setText("no model yet")
            self.tokenizer_label.setText("")
        else:
            self.params_label.setText(f"{format_params(model.num_params())} parameters")
            self.tokenizer_label.setText(tokenizer.describe() if tokenizer is not None else "")
        name = self.state.display_name
        if self.state.untrained:
            name += " (untrained)"
        self.file_label.setText(name)
        if self.state.checkpoint_path is not None:
            self.file_label.setToolTip(str(self.state.checkpoint_path))
        self.setWindowTitle(f"{self.state.display_name} — {APP_NAME}")
        self.save_action.setEnabled(model is not None)
        self.save_as_action.setEnabled(model is not None)

    @Slot(str)
    def _set_device(self, choice: str) -> None:
        try:
            name = device_name(pick_device(choice))
        except ImportError:
            name = choice
        except ValueError:
            name = f"{choice} (not available)"
        short = name.split(" (")[0] if name.startswith("CPU") else name
        self.device_label.setText(short)
        self.device_label.setToolTip(f"Training device: {name}")

    @Slot(bool)
    def _on_running_changed(self, running: bool) -> None:
        for action in (self.new_action, self.open_action, self.open_model_action, self.import_action):
            action.setEnabled(not running)

    # ================================================================== models

    @Slot()
    def load_default_model(self) -> None:
        self._run_model_job("default", default_model_job(), "Cannot load the default model")

    def _run_model_job(self, name: str, generator, error_title: str) -> None:
        job = self.runner.start(name, generator)
        job.events.connect(self._on_model_events)
        job.failed.connect(lambda message, t=error_title: self._on_model_job_failed(t, message))

    @Slot(list)
    def _on_model_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, ModelLoadedEvent):
                self.state.set_model(event.model, event.tokenizer, path=Path(event.path) if event.path else None,
                                     train_state=event.train_state, dirty=event.dirty, untrained=event.untrained,
                                     name=event.name)
                if event.path and Path(event.path).resolve() != DEFAULT_MODEL.resolve():
                    Settings().add_recent_file(event.path)
                if event.note:
                    dialogs.notify(self, event.note)
                if event.warning:
                    dialogs.show_warning(self, "Training state not restored", event.warning)
            elif isinstance(event, ProgressEvent):
                dialogs.notify(self, event.message, 3000)

    def _on_model_job_failed(self, title: str, message: str) -> None:
        dialogs.notify(self, message)
        dialogs.show_error(self, title, message)

    def _busy_training(self) -> bool:
        if self.state.training.running:
            dialogs.notify(self, "Stop training first")
            return True
        return False

    def _confirm_discard(self) -> bool:
        """True when it is fine to replace the current model (saving it first if asked)."""
        if not self.state.dirty or self.state.model is None:
            return True
        answer = dialogs.ask_save_changes(self, self.state.display_name.rstrip(" *"))
        if answer == "cancel":
            return False
        if answer == "save":
            return self.save()
        return True

    @Slot()
    def new_model(self) -> None:
        if self._busy_training() or not self._confirm_discard():
            return
        form = self.training_tab.model_panel.form
        config = form.config()
        tokenizer = self.state.tokenizer
        if config is None:
            dialogs.notify(self, f"Cannot make a model: {form.error()}")
            return
        if tokenizer is None:
            dialogs.notify(self, "No tokenizer yet: wait for the default model to load")
            return
        self._run_model_job("new", new_model_job(config, tokenizer), "Cannot create the model")

    def open_checkpoint(self, path: str | Path | None = None) -> None:
        if self._busy_training() or not self._confirm_discard():
            return
        if path is None:
            path = dialogs.open_file(self, "Open checkpoint", dialogs.CHECKPOINT_FILTER)
            if not path:
                return
        name = Path(path).name
        self._run_model_job("open", open_checkpoint_job(path), f"Cannot open {name}")

    def open_model_dialog(self) -> None:
        """File ▸ Open model…: pick a cached model, a folder, or download one; then open it."""
        if self._busy_training():
            return
        dialog = OpenModelDialog(self.runner, self)
        if dialog.exec() and dialog.chosen is not None:
            self.open_model(dialog.chosen)
        dialog.deleteLater()

    def open_model(self, source: str | Path) -> None:
        """Open any model source (a checkpoint, a Hugging Face folder, a cached repo id) as the current model."""
        if self._busy_training() or not self._confirm_discard():
            return
        name = Path(source).name or str(source)
        self._run_model_job("open", open_source_job(source), f"Cannot open {name}")

    def import_hf(self, folder: str | Path | None = None) -> None:
        if self._busy_training() or not self._confirm_discard():
            return
        if folder is None:
            folder = dialogs.open_folder(self, "Import GPT-2 from a Hugging Face folder")
            if not folder:
                return
        self._run_model_job("import", import_hf_job(folder), f"Cannot import {Path(folder).name}")

    @Slot()
    def save(self) -> bool:
        path = self.state.checkpoint_path
        if path is None or Path(path).resolve() == DEFAULT_MODEL.resolve():
            return self.save_as()  # never overwrite the bundled default model
        return self._save_to(path)

    @Slot()
    def save_as(self) -> bool:
        if self.state.model is None:
            return False
        current = self.state.checkpoint_path
        default_name = current.name if current is not None else "model.safetensors"
        path = dialogs.save_file(self, "Save model", default_name, dialogs.CHECKPOINT_FILTER)
        if not path:
            return False
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".safetensors")
        return self._save_to(path)

    def _save_to(self, path: Path) -> bool:
        """Save the current model to `path` in the worker; True when it was written.

        The GUI thread waits in a local event loop (it keeps painting; the window takes no input meanwhile),
        so callers such as the close handler still get a plain yes or no. Every failure, of any kind,
        becomes a dialog: the model stays in memory, unsaved, and the window stays open. The wait cursor
        always comes back."""
        model = self.state.model
        if model is None or self._saving:
            return False
        outcome: dict[str, str | None] = {"saved": None, "error": None}

        def on_events(events: list) -> None:
            for event in events:
                if isinstance(event, ModelSavedEvent):
                    outcome["saved"] = event.path

        def on_failed(message: str) -> None:
            outcome["error"] = message

        self._saving = True
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        self.menuBar().setEnabled(False)
        self.centralWidget().setEnabled(False)
        try:
            job = self.runner.start("save", save_checkpoint_job(
                path, model, self.state.tokenizer, self.state.train_state, self.state.training.optimizer_for(model)))
            loop = QEventLoop()
            job.events.connect(on_events)
            job.failed.connect(on_failed)
            job.finished.connect(loop.quit)
            loop.exec()  # the job's signals are queued to this thread: none can arrive before this runs
        except Exception as e:  # whatever goes wrong, the model must not be lost: say so and keep it
            outcome["error"] = error_message(e)
        finally:
            self.centralWidget().setEnabled(True)
            self.menuBar().setEnabled(True)
            QApplication.restoreOverrideCursor()
            self._saving = False
        if outcome["saved"] is None:
            message = outcome["error"] or "the save did not finish"
            dialogs.notify(self, f"Not saved: {message}")
            dialogs.show_error(self, "Cannot save", f"{message}\n\nThe model is still open and not saved; "
                                                   "try another folder (Save as…).")
            return False
        self.state.mark_saved(Path(path))
        Settings().add_recent_file(path)
        dialogs.notify(self, f"Saved {Path(path).name}")
        return True

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = Settings().recent_files()
        if not files:
            action = self.recent_menu.addAction("No recent files")
            action.setEnabled(False)
            return
        for path in files:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _=False, p=path: self._open_recent(p))
        self.recent_menu.addSeparator()
        self.recent_menu.addAction("Clear list", self._clear_recent)

    def _open_recent(self, path: str) -> None:
        if not Path(path).exists():
            Settings().remove_recent_file(path)
            dialogs.show_error(self, "Cannot open", f"{path} no longer exists")
            return
        self.open_checkpoint(path)

    @staticmethod
    def _clear_recent() -> None:
        s = Settings()
        for p in s.recent_files():
            s.remove_recent_file(p)

    # ================================================================== drag and drop

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        self.open_dropped(paths[0])

    def open_dropped(self, path: Path) -> None:
        """A checkpoint or a Hugging Face model folder (with config.json) opens as the current model; any other
        file or folder becomes the corpus."""
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            self.open_checkpoint(path)
        elif path.is_dir() and (path / "config.json").is_file():
            self.open_model(path)
        else:
            self.tabs.setCurrentWidget(self.training_tab)
            self.training_tab.data_panel.add_corpus_file(path)
            dialogs.notify(self, f"Corpus: {path.name}")

    # ================================================================== theme, settings, closing

    def set_theme(self, name: str) -> None:
        """Switch the theme now (both ways, every tab) and keep the choice for the next start."""
        name = theme.apply_theme(QApplication.instance(), name)
        Settings().set_value("view/theme", name)
        for action in self.theme_group.actions():
            action.setChecked(action.data() == name)

    def _restore_settings(self) -> None:
        s = Settings()
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 860)
        self.tabs.setCurrentIndex(s.value("window/tab", 0))
        name = theme.forced_theme() or s.value("view/theme", "system")
        if name != theme.current_theme():
            name = theme.apply_theme(QApplication.instance(), name)
        for action in self.theme_group.actions():
            action.setChecked(action.data() == name)

    def save_settings(self) -> None:
        s = Settings()
        s.set_value("window/geometry", self.saveGeometry())
        s.set_value("window/tab", self.tabs.currentIndex())
        self.training_tab.save_settings()
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closing:
            event.accept()
            return
        if self._saving:  # closed (e.g. from the title bar) while a save is running: let it finish
            event.ignore()
            return
        try:
            self._close(event)
        except Exception as e:  # nothing may escape the close handler: the app would quit and lose the model
            event.ignore()
            self._closing = False
            dialogs.show_error(self, "Cannot close", f"{error_message(e)}\n\nThe window stays open so "
                                                     "nothing is lost.")

    def _close(self, event: QCloseEvent) -> None:
        running = self.state.training.running
        answer = "discard"
        if running or (self.state.dirty and self.state.model is not None):
            answer = dialogs.ask_save_changes(self, self.state.display_name.rstrip(" *"), running=running)
            if answer == "cancel":
                event.ignore()
                return
        if running:
            dialogs.notify(self, "Stopping training…")
            self.training_tab.stop_now(adopt=answer == "save")
        if answer == "save" and not self.save():
            event.ignore()  # the save dialog was cancelled or failed: keep the window
            return
        self._closing = True
        self.save_settings()
        self.runner.stop_all(5000)
        event.accept()

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<b>{APP_NAME}</b><p>Train a small GPT, watch it learn, look inside its attention and "
                          "tokens, and compare decoders side by side.</p><p>PySide6 · pyqtgraph · PyTorch</p>")

