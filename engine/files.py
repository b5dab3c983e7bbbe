"""The app's cache and data folders, and the one way the engine writes a file: atomically.

`atomic_write(path, write)` has `write` fill a temporary file in the target's own folder, fsyncs it, gives
it the usual permissions and renames it over `path`. A failure of any kind (a full disk, safetensors' own
error, an interrupt) removes the temporary file and leaves an existing `path` untouched. Temporary files
carry the writer's process id in a name of our own (`.NAME.PID.RANDOM.llmp-tmp`), so those left behind by
a killed process are recognised and removed by the next write to the same folder.

`open_regular(path)` is the one way the engine opens a file it did not write itself: it refuses FIFOs,
devices and sockets at once (a FIFO opened for reading would block forever, `/dev/zero` never ends),
and files over a size cap.
"""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

TEMP_SUFFIX = ".llmp-tmp"


def cache_dir() -> Path:
    """The app's own cache folder: $LLM_PLAYGROUND_CACHE, else the platform's user cache."""
    override = os.environ.get("LLM_PLAYGROUND_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(user_cache_dir("llm-playground"))


def data_dir() -> Path:
    """The app's own data folder (what the user keeps: run logs, rescued models): $LLM_PLAYGROUND_DATA, else the
    platform's user data folder."""
    override = os.environ.get("LLM_PLAYGROUND_DATA")
    if override:
        return Path(override).expanduser()
    return Path(user_data_dir("llm-playground"))


def rescue_folders() -> list[Path]:
    """Where a finished run goes when its own output cannot be written (a full disk): the user's data folder
    (`<user data>/llm-playground/rescued`), else the current folder, else the temporary folder."""
    return [data_dir() / "rescued", Path.cwd(), Path(tempfile.gettempdir())]


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
    marker = TEMP_SUFFIX.lstrip(".")
    for entry in entries:
        parts = entry.name.split(".")
        # ".NAME.PID.RANDOM.llmp-tmp[.ext]": the pid is the second part before the last marker (NAME may
        # itself hold dots, and even the marker).
        try:
            at = len(parts) - 1 - parts[::-1].index(marker)
            pid = int(parts[at - 2])
        except (ValueError, IndexError):
            continue
        if pid > 0 and not _process_alive(pid) and entry.is_file() and not entry.is_symlink():
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
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX + suffix,
                                        dir=folder)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
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


def check_folder_writable(path: str | os.PathLike) -> None:
    """Fail now, not after hours of training, when `path` cannot be written: its folder is missing, read-only
    or full. Really creates (and removes) a small temporary file there, because permission bits do not
    tell the whole story (root, read-only mounts, quotas, a full disk)."""
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: the folder {folder} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.write(fd, b"\0" * 4096)  # a full disk refuses even this
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
        os.unlink(name)


def open_regular(path: str | os.PathLike, max_bytes: int | None = None, what: str = "file"):
    """Open a regular file for binary reading; OSError with a one-line message for anything else.

    A FIFO, device or socket is refused before it is opened for reading (opening a FIFO blocks until a
    writer appears; a device may never end). O_NONBLOCK covers a file swapped for a FIFO in between.
    """
    path = Path(path).expanduser()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        missing = FileNotFoundError(f"no such {what}: {path}")
        missing.filename = str(path)
        raise missing from None
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{path} is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file (a pipe, device or socket), so it cannot be a {what}")
    if max_bytes is not None and info.st_size > max_bytes:
        raise OSError(f"{path.name} is too large for a {what} ({info.st_size:,} bytes; the limit is {max_bytes:,})")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(f"{path} is not a regular file, so it cannot be a {what}")
    return f


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `open_regular`)."""
    chunks, total = [], 0
    with open_regular(path, max_bytes, what) as f:
        while chunk := f.read(1 << 24):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew after the size check
                raise OSError(f"{Path(path).name} is too large for a {what} (the limit is {max_bytes:,} bytes)")
    return b"".join(chunks)


def first_line(error: BaseException, limit: int = 500) -> str:
    """An exception as one line for the user: its message's first line (cut to `limit` characters), or its
    type's name."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` for a UTF-8 text file."""
    def write(name: str) -> None:
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)
