"""Downloads that never hang: resumable, verified, with progress events.

`download_job(url, dest, ...)` is a generator of `ProgressEvent`s (job "download") like every other long
engine job, so the GUI shows a bar and the CLI prints one; closing it cancels. Bytes go to `dest.part`
first; a later call resumes from there with an HTTP Range request, and only a verified file is renamed
to `dest` (atomically). The connection is opened in a helper thread with a deadline because a socket
timeout does not cover a DNS lookup, which can hang for long when the machine is offline.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.events import ProgressEvent

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 3.0  # the whole DNS + connect + first answer must fit in this
READ_TIMEOUT_S = 20.0  # once connected, a silent socket for this long fails the download


class DownloadError(OSError):
    """A download failed; the message (one line) is meant for the user."""


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _reason(error: BaseException) -> str:
    """A short human reason for a network error ("Connection refused", "timed out", "HTTP 404 Not Found")."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    elif isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def open_url(request: urllib.request.Request, connect_timeout: float = CONNECT_TIMEOUT_S,
             read_timeout: float = READ_TIMEOUT_S):
    """`urlopen` with an overall deadline on getting an answer (DNS included); raises DownloadError."""
    result: dict = {}

    def target() -> None:
        try:
            result["response"] = urllib.request.urlopen(request, timeout=read_timeout)
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    # A daemon thread: if the lookup hangs past the deadline it is left behind and dies with the process.
    thread = threading.Thread(target=target, name="download-connect", daemon=True)
    thread.start()
    thread.join(connect_timeout)
    host = _host(request.full_url)
    if thread.is_alive():
        raise DownloadError(f"{host} did not answer within {connect_timeout:g} s (offline?)")
    error = result.get("error")
    if isinstance(error, urllib.error.HTTPError):
        return error  # an HTTP answer (e.g. 416); the caller reads its status
    if error is not None:
        raise DownloadError(f"cannot reach {host}: {_reason(error)}") from None
    return result["response"]


def _verify(path: Path, size: int | None, sha256: str | None,
            check: Callable[[Path], None] | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path.name}: got {actual:,} bytes, expected {size:,}")
    if sha256 is not None:
        digest = file_sha256(path)
        if digest != sha256.lower():
            raise DownloadError(f"{path.name}: sha256 {digest[:12]}... does not match the expected {sha256[:12]}...")
    if check is not None:
        check(path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_job(url: str, dest: str | os.PathLike, *, size: int | None = None, sha256: str | None = None,
                 check: Callable[[Path], None] | None = None, connect_timeout: float = CONNECT_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S, job: str = "download") -> Iterator[ProgressEvent]:
    """Download url to dest, resuming dest.part, verifying size / sha256 / check(path) before the rename.

    Yields ProgressEvent(job, done_bytes, total_bytes or 0). Raises DownloadError with one clear line.
    A file that fails verification is deleted (so the next try starts clean).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {dest.parent}: {e.strerror or e}") from None
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "llm-playground"}
    if have:
        headers["Range"] = f"bytes={have}-"
    response = open_url(urllib.request.Request(url, headers=headers), connect_timeout, read_timeout)
    try:
        status = getattr(response, "status", None) or response.getcode()
        if status == 416 and have:
            # The server has nothing past what we hold: the .part is probably complete.
            total = have
        elif status == 206 and have:
            total = have + int(response.headers.get("Content-Length", 0) or 0)
        elif status == 200:
            have = 0  # the server ignored the Range: start over
            total = int(response.headers.get("Content-Length", 0) or 0)
        else:
            raise DownloadError(f"{url}: HTTP {status}")
        total = total or (size or 0)
        yield ProgressEvent(job, float(have), float(total), f"downloading {dest.name}")
        if status != 416:
            try:
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        block = response.read(CHUNK_BYTES)
                        if not block:
                            break
                        f.write(block)
                        have += len(block)
                        yield ProgressEvent(job, float(have), float(total), f"downloading {dest.name}")
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as e:  # timeouts, resets, a short body
                raise DownloadError(
                    f"download of {dest.name} broke off at {have:,} bytes ({_reason(e)}); run again to resume"
                ) from None
            if total and have < total:  # the server hung up early; the .part is kept for resuming
                raise DownloadError(
                    f"download of {dest.name} broke off at {have:,} of {total:,} bytes; run again to resume"
                )
    finally:
        response.close()
    try:
        _verify(part, size, sha256, check)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    yield ProgressEvent(job, float(have), float(have), f"downloaded {dest.name}")


def download(url: str, dest: str | os.PathLike, **kwargs) -> Path:
    """Run `download_job` to the end; returns dest."""
    for _ in download_job(url, dest, **kwargs):
        pass
    return Path(dest)
