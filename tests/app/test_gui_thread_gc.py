"""Garbage collection in the app runs on the GUI thread only (app.launcher.collect_on_gui_thread)."""
from __future__ import annotations

import gc
import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.launcher import collect_on_gui_thread, stop_collecting_on_gui_thread  # noqa: E402


class _Cycle:
    """An object in a reference cycle that records the thread that finalizes it."""

    finalized_on: list[int] = []

    def __init__(self):
        self.me = self

    def __del__(self):
        _Cycle.finalized_on.append(threading.get_ident())


def test_cycles_made_by_a_worker_are_collected_on_the_gui_thread(qtbot):
    collector = collect_on_gui_thread()
    try:
        assert not gc.isenabled()
        _Cycle.finalized_on.clear()

        def worker():  # enough cyclic garbage to start an automatic collection many times over
            for _ in range(20 * gc.get_threshold()[0]):
                _Cycle()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert _Cycle.finalized_on == []  # nothing collected on the worker thread
        qtbot.waitUntil(lambda: len(_Cycle.finalized_on) > 0, timeout=5000)  # the GUI-thread timer collects
        assert set(_Cycle.finalized_on) == {threading.get_ident()}
    finally:
        stop_collecting_on_gui_thread(collector)
    assert gc.isenabled()
