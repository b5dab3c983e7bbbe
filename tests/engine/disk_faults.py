"""A disk that fills up, for the save-failure tests of the engine and the app: a real 64 KiB tmpfs where the tests
run as root, else a checkpoint writer that fails half-way with ENOSPC."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from engine import checkpoint as ckpt_module


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[bool]:
    """A 64 KiB tmpfs mounted at `folder` (True), or nothing (False) where mounting is not possible."""
    folder.mkdir()
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def full_folder(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """A folder where a checkpoint does not fit: the tmpfs, or (not root) a folder whose checkpoint writer
    fails half-way with ENOSPC, like a disk filling up during the write."""
    folder = tmp_path / "small-disk"
    with small_disk(folder) as mounted:
        if not mounted:
            real = ckpt_module.save_file

            def filling_disk(tensors, filename, metadata=None):
                if Path(filename).parent == folder:
                    Path(filename).write_bytes(b"\0" * 4096)
                    raise OSError(errno.ENOSPC, "No space left on device")
                real(tensors, filename, metadata=metadata)

            monkeypatch.setattr(ckpt_module, "save_file", filling_disk)
        yield folder
