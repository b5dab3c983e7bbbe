"""engine/ must never import Qt: the CLI and torchrun workers run on machines without a display."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("PySide6", "pyqtgraph", "superqt", "shiboken6")

SCRIPT = f"""
import importlib, pkgutil, sys
import engine
names = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
for name in names:
    if name != "engine.__main__":  # running it would parse this script's argv
        importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(len(names), ",".join(loaded))
"""


def test_engine_imports_no_qt():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1) if " " in result.stdout.strip() else (result.stdout.strip(), "")
    assert int(count) >= 10  # really imported the submodules (config, model, trainer, checkpoint, ...)
    assert loaded == "", f"engine imported Qt modules: {loaded}"
