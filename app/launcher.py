"""Start the app: `python main.py [--theme light|dark|system] [CHECKPOINT | TEXT_FILE]`, or `llm-playground`."""
from __future__ import annotations

import argparse
import ctypes
import gc
import sys
from pathlib import Path

from pyqtgraph.util.garbage_collector import GarbageCollector
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app import theme
from app.main_window import MainWindow
from app.settings import APPLICATION, ORGANIZATION

GIL_SWITCH_INTERVAL_S = 0.0005
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and what is left for Qt (its own flags such as -platform)."""
    parser = argparse.ArgumentParser(prog="llm-playground", description="LLM Playground: train, look inside and "
                                     "sample small language models.")
    parser.add_argument("--theme", choices=theme.THEMES,
                        help="colours for this session (default: the one chosen in View ▸ Theme, else the system's)")
    parser.add_argument("file", nargs="?", help="a checkpoint (.safetensors) to open, or a text file to train on")
    args, rest = parser.parse_known_args(argv[1:])
    return args, argv[:1] + rest


def use_one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own malloc arena, whose heaps are mapped and unmapped as
    tensors come and go. A second training run in the app (a new worker thread) then spent ~9 s of its
    first step in the kernel, page-faulting, against ~2 s for the first run: its first step took 11-17 s
    instead of 7-8 s. One arena for the process keeps the memory the first run freed for the next. Elsewhere
    than glibc this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        pass


def make_app(argv: list[str] | None = None, *, theme_name: str | None = None) -> QApplication:
    """The QApplication with the app's names, HiDPI policy, theme, style sheet and plot settings (one per process)."""
    use_one_malloc_arena()
    # The GUI thread takes the GIL for every Python slot and every check of a Python override while Qt lays
    # out and paints. A worker running Python (recovering BPE merges, say) gives the GIL up only when its switch
    # interval runs out: 5 ms by default, so each of those takes cost up to 5 ms, and a repaint took 200-300 ms.
    # At 0.5 ms the same repaint takes under 70 ms; the workers lose little (torch kernels run without the GIL).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
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
    theme.setup_application(app, theme_name)
    return app


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (torch, Qt, pyqtgraph: ~200,000 objects) out of the garbage
    collector's reach. A full collection scans every tracked object while holding the GIL, which froze the
    window for 200-400 ms whenever a job allocated enough to trigger one; frozen, it scans only what the
    session creates."""
    gc.collect()
    gc.freeze()


def collect_on_gui_thread() -> GarbageCollector:
    """Python's collector runs in whichever thread allocates past its threshold. Run by a worker thread, it
    would destroy the Qt widgets caught in reference cycles on that thread, which Qt forbids (seen to deadlock
    with the GUI thread in the tests). pyqtgraph's GarbageCollector turns automatic collection off and collects
    from a GUI-thread timer instead (each second, each generation once its count passes the usual threshold).
    Keep the returned object alive; `stop_collecting_on_gui_thread` undoes it."""
    return GarbageCollector(interval=1.0)


def stop_collecting_on_gui_thread(collector: GarbageCollector) -> None:
    collector.timer.stop()
    gc.enable()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args, qt_argv = parse_args(argv)  # --help and a bad --theme exit here, with argparse's one-line error
    app = make_app(qt_argv, theme_name=args.theme)
    window = MainWindow(load_default=not args.file)
    freeze_startup_objects()
    collector = collect_on_gui_thread()  # noqa: F841 - collects while the window runs
    window.show()
    if args.file:
        window.open_dropped(Path(args.file))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
