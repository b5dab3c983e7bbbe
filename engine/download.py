"""Downloads that never hang: resumable, verified, with progress events; and the tiny-shakespeare corpus.

`download_job(url, dest, ...)` is a generator of `ProgressEvent`s (job "download") like every other long
engine job, so the GUI shows a bar and the CLI prints one; closing it cancels. Bytes go to `dest.part`
first; a later call resumes from there with an HTTP Range request, and only a verified file is renamed
to `dest` (atomically). The connection is opened in a helper thread with a deadline because a socket
timeout does not cover a DNS lookup, which can hang for long when the machine is offline.

tiny-shakespeare (Karpathy's char-rnn corpus, 1,115,394 bytes of ASCII) is downloaded once into the
user cache and read offline after that. Its sha256 is not published next to the file, so it is checked
by exact size, UTF-8 text and its first words; the digest of the first good download is written next to
it and checked on every later read (a damaged cache file is noticed and fetched again).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .events import ProgressEvent

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 3.0  # the whole DNS + connect + first answer must fit in this
READ_TIMEOUT_S = 20.0  # once connected, a silent socket for this long fails the download


class DownloadError(OSError):
    """A download failed; the message (one line) is meant for the user."""


def cache_dir() -> Path:
    """The app's own cache folder: $LLM_PLAYGROUND_CACHE, else the platform's user cache."""
    env = os.environ.get("LLM_PLAYGROUND_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llm-playground"))


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


# ---------------------------------------------------------------- tiny-shakespeare

@dataclass(frozen=True)
class RemoteCorpus:
    name: str
    url: str
    size: int
    description: str
    starts_with: str  # the file's first words: a cheap check that we got the right text

    @property
    def path(self) -> Path:
        return cache_dir() / "corpora" / f"{self.name}.txt"

    def check(self, path: Path) -> None:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise DownloadError(f"{self.name}: the downloaded file is not UTF-8 text") from None
        if not text.startswith(self.starts_with):
            raise DownloadError(f"{self.name}: the downloaded file is not the expected text")


TINY_SHAKESPEARE = RemoteCorpus(
    name="tiny-shakespeare",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    size=1_115_394,
    description="Tiny Shakespeare: 40,000 lines of the plays (1.1 MB; downloaded once, then offline)",
    starts_with="First Citizen:",
)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_corpus_ok(corpus: RemoteCorpus) -> bool:
    """True when the cached file is there, the right size and unchanged since it was downloaded."""
    path = corpus.path
    if not path.exists() or path.stat().st_size != corpus.size:
        return False
    digest = _digest_path(path)
    try:
        return digest.read_text().strip() == file_sha256(path)
    except OSError:
        return False


def fetch_corpus_job(corpus: RemoteCorpus = TINY_SHAKESPEARE, *, url: str | None = None,
                     connect_timeout: float = CONNECT_TIMEOUT_S) -> Iterator[ProgressEvent]:
    """Make sure the corpus is in the cache, downloading it if needed (progress events as it goes)."""
    if cached_corpus_ok(corpus):
        return
    path = corpus.path
    path.unlink(missing_ok=True)  # wrong size or changed since download: fetch again
    try:
        yield from download_job(url or corpus.url, path, size=corpus.size, check=corpus.check,
                                connect_timeout=connect_timeout, job=f"download {corpus.name}")
    except DownloadError as e:
        from .data import BUILTIN_CORPORA

        raise DownloadError(
            f"{corpus.name} is not downloaded yet and could not be fetched ({e}); "
            f"use a built-in corpus instead ({', '.join(BUILTIN_CORPORA)}) or a text file of your own"
        ) from None
    _digest_path(path).write_text(file_sha256(path) + "\n")


def stderr_progress(event: ProgressEvent) -> None:
    """A one-line progress bar on stderr for command-line use (drawn only on a terminal)."""
    if not sys.stderr.isatty():
        return
    width = 30
    frac = event.done / event.total if event.total else 0.0
    bar = "#" * int(width * frac) + "." * (width - int(width * frac))
    end = "\n" if event.total and event.done >= event.total else ""
    sys.stderr.write(f"\r{event.job}: [{bar}] {event.done / 1e6:.1f}/{event.total / 1e6:.1f} MB{end}")
    sys.stderr.flush()


def load_remote_corpus(corpus: RemoteCorpus = TINY_SHAKESPEARE,
                       progress: Callable[[ProgressEvent], None] | None = stderr_progress):
    """The corpus as an engine.data.Corpus, downloading it first if it isn't cached."""
    from .data import Corpus, CorpusError

    try:
        for event in fetch_corpus_job(corpus):
            if progress is not None:
                progress(event)
    except DownloadError as e:
        raise CorpusError(str(e)) from None
    text = corpus.path.read_text(encoding="utf-8")
    return Corpus(corpus.name, [text], corpus.description, corpus.name)


REMOTE_CORPORA: dict[str, RemoteCorpus] = {TINY_SHAKESPEARE.name: TINY_SHAKESPEARE}


def register_corpora(registry: dict) -> None:
    """Add the downloadable corpora to engine.data's EXTRA_CORPORA (name -> loader)."""
    for name, corpus in REMOTE_CORPORA.items():
        registry.setdefault(name, lambda corpus=corpus: load_remote_corpus(corpus))
