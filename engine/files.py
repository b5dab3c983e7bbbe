"""The app's cache folder and the one way the engine writes a file: atomically.

`atomic_write(path, write)` has `write` fill a temporary file in the target's own folder, fsyncs it, gives
it the usual permissions and renames it over `path`. A failure of any kind (a full disk, safetensors' own
error, an interrupt) removes the temporary file and leaves an existing `path` untouched. Temporary files
carry the writer's process id in a name of our own (`.NAME.PID.RANDOM.llmp-tmp`), so those left behind by
a killed process are recognised and removed by the next write to the same folder.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from platformdirs import user_cache_dir

TEMP_SUFFIX = ".llmp-tmp"


def cache_dir() -> Path:
    """The app's own cache folder: $LLM_PLAYGROUND_CACHE, else the platform's user cache."""
    override = os.environ.get("LLM_PLAYGROUND_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(user_cache_dir("llm-playground"))


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: os.umask can only be read by setting it, which would race with other threads' files.
_UMASK = _read_umask() if os.name == "posix" else 0


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_files(folder: Path) -> None:
    """Delete our own temporary files in `folder` whose writing process is gone (killed mid-save)."""
    try:
        entries = list(folder.glob(f".*{TEMP_SUFFIX}*"))
    except OSError:
        return
    for entry in entries:
        parts = entry.name.split(".")
        # ".NAME.PID.RANDOM.llmp-tmp[.ext]": the pid is the third part from the marker.
        try:
            marker = parts.index(TEMP_SUFFIX.lstrip("."))
            pid = int(parts[marker - 2])
        except (ValueError, IndexError):
            continue
        if not _process_alive(pid):
            try:
                entry.unlink()
            except OSError:
                pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, suffix: str = "") -> Path:
    """Write `path` atomically: `write(temp_name)` fills a temp file in the same folder, then it replaces `path`.

    `suffix` is appended to the temp name for writers that insist on an extension (numpy adds `.npy`).
    Raises OSError (with the path in its message) when the folder is missing or not writable; any error
    from `write` propagates unchanged. Either way no temporary file is left behind.
    """
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: the folder {folder} does not exist")
    remove_stale_temp_files(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX + suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp_name)
        if os.name == "posix":
            # mkstemp makes the file private (0600); a saved file gets the usual rights (0666 - umask).
            # After writing, because some writers (safetensors) recreate the file.
            os.chmod(tmp_name, 0o666 & ~_UMASK)
        fd = os.open(tmp_name, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def first_line(error: BaseException) -> str:
    """An exception as one line for the user: its message's first line, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` for a UTF-8 text file."""
    def write(name: str) -> None:
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)
