"""Tens of thousands of Qt calls in a fresh process must run and exit cleanly.

Some PySide6 builds crash after many calls (6.12.0 on Python 3.11 dies with "Fatal Python error:
none_dealloc"): this makes such an install fail loudly here instead of crashing the app later.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    from PySide6.QtCore import QObject, Qt, Signal
    from PySide6.QtWidgets import QApplication, QLabel, QProgressBar

    class Emitter(QObject):
        ping = Signal(int)

    app = QApplication(["stress"])
    label, bar, emitter = QLabel(), QProgressBar(), Emitter()
    received = []
    emitter.ping.connect(received.append)
    bar.setRange(0, 50_000)
    for i in range(50_000):
        label.setText(f"step {i}")
        label.setProperty("step", i)
        assert label.property("step") == i
        bar.setValue(i)
        emitter.ping.emit(i)
        label.setAlignment(Qt.AlignmentFlag.AlignLeft if i % 2 else Qt.AlignmentFlag.AlignRight)
        if i % 5000 == 0:
            app.processEvents()
    assert len(received) == 50_000 and label.text() == "step 49999"
    print("ok")
""")


def test_many_qt_calls_in_a_fresh_process_exit_cleanly():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"
    assert "Fatal Python error" not in proc.stderr
