"""Start the app: `python main.py [CHECKPOINT]`, or the `llm-playground` script."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app import theme
from app.main_window import MainWindow
from app.settings import APPLICATION, ORGANIZATION


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with the app's names, HiDPI policy, style sheet and plot settings (one per process)."""
    app = QApplication.instance()
    if app is None:
        # Fractional scale factors (125%, 150%) render at their real size instead of rounding: crisp text and lines.
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(list(argv if argv is not None else sys.argv))
    # A worker thread may still be returning from its last signal when the loop ends: wait for it,
    # so the interpreter never shuts down under a running thread.
    app.aboutToQuit.connect(lambda: QThreadPool.globalInstance().waitForDone(10000))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    theme.setup_application(app)
    return app


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    app = make_app(argv)
    files = [a for a in argv[1:] if not a.startswith("-")]
    window = MainWindow(load_default=not files)
    window.show()
    if files:
        window.open_dropped(Path(files[0]))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
