"""Corpora and batches.

Built-in corpora work offline with no file: the Python reference docs and standard library that
ship with Python itself, and small synthetic tasks whose attention patterns are easy to read.
A user's text file or folder works too. A corpus is a list of documents; `Dataset` encodes them
with a tokenizer (joined by the end-of-text token where there is one), splits 90/10 and draws
random batches.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import sysconfig
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.events import ProgressEvent, run_job
from engine.files import atomic_write, atomic_write_text, cache_dir, first_line, read_regular
from engine.http import CONNECT_TIMEOUT_S, DownloadError, download_job, file_sha256
from engine.tokenizers import Tokenizer
from engine.validate import printable

TEXT_SUFFIXES = (".txt", ".md", ".py")
PYTHON_SOURCE_CAP = 3_000_000  # characters: enough to learn from, quick to tokenize
SYNTHETIC_CHARS = 200_000  # characters of each synthetic task
MAX_FILE_BYTES = 2_000_000_000  # a corpus file, or a folder's files together
MAX_FOLDER_FILES = 100_000
MMAP_MIN_TOKENS = 5_000_000  # token arrays at least this big are cached on disk and memory-mapped


class CorpusError(ValueError):
    """A corpus could not be read or is unusable; the message is meant for the user."""


@dataclass
class Corpus:
    name: str
    documents: list[str]
    description: str = ""
    source: str = ""  # how to get it again: a built-in name or a path

    @property
    def num_chars(self) -> int:
        return sum(len(d) for d in self.documents)

    def text(self, separator: str = "\n\n") -> str:
        return separator.join(self.documents)

    def sample_passage(self, max_chars: int = 400) -> str:
        """A short passage from the start of the first non-trivial document (default text for tabs)."""
        for doc in self.documents:
            if len(doc.strip()) >= 40:
                return doc.strip()[:max_chars]
        return self.text()[:max_chars]


# ---------------------------------------------------------------- built-in corpora

def _python_docs() -> list[str]:
    from pydoc_data.topics import topics  # the reference text shipped inside CPython

    return [topics[k].strip() + "\n" for k in sorted(topics)]


def _python_source() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(stdlib.glob("*.py")):  # top-level modules only: plain, well-commented code
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        docs.append(text)
        total += len(text)
        if total >= PYTHON_SOURCE_CAP:
            break
    return docs


def _synthetic(make_line: Callable[[random.Random], str]) -> Callable[[], list[str]]:
    def build() -> list[str]:
        rng = random.Random(0)  # deterministic: the same corpus on every machine
        lines, total = [], 0
        while total < SYNTHETIC_CHARS:
            line = make_line(rng) + "\n"
            lines.append(line)
            total += len(line)
        return ["".join(lines)]
    return build


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _random_word(rng: random.Random, lo: int = 4, hi: int = 10) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(lo, hi)))


def _copy_line(rng: random.Random) -> str:
    w = _random_word(rng, 6, 16)
    return f"{w}|{w}"  # the second half can only be predicted by looking back: induction heads


def _reverse_line(rng: random.Random) -> str:
    w = _random_word(rng)
    return f"{w}>{w[::-1]}"


def _sort_line(rng: random.Random) -> str:
    w = _random_word(rng)
    return f"{w}>{''.join(sorted(w))}"


def _addition_line(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"{a}+{b}={a + b}"


@dataclass
class BuiltinCorpus:
    description: str
    build: Callable[[], list[str]]
    synthetic: bool = False  # a generated task (copy, sort...) rather than real text


BUILTIN_CORPORA: dict[str, BuiltinCorpus] = {
    "python-docs": BuiltinCorpus("Python's language reference (ships with Python, ~1 MB of English)", _python_docs),
    "python-source": BuiltinCorpus("Python's standard library source (~3 MB of code)", _python_source),
    "copy": BuiltinCorpus("random words written twice, 'abc|abc': learned by induction heads",
                          _synthetic(_copy_line), synthetic=True),
    "reverse": BuiltinCorpus("random words and their reverse, 'abc>cba'", _synthetic(_reverse_line), synthetic=True),
    "sort": BuiltinCorpus("random words and their letters sorted, 'cab>abc'", _synthetic(_sort_line), synthetic=True),
    "addition": BuiltinCorpus("sums of three-digit numbers, '12+34=46'", _synthetic(_addition_line), synthetic=True),
}



def corpus_names() -> list[str]:
    """Every corpus that can be named: the built-in ones, then the downloadable ones."""
    return list(BUILTIN_CORPORA) + list(REMOTE_CORPORA)


def is_synthetic(name: str) -> bool:
    """True for the generated task corpora (copy, reverse, sort, addition)."""
    corpus = BUILTIN_CORPORA.get(name)
    return corpus is not None and corpus.synthetic


# ---------------------------------------------------------------- files

def decode_text_file(path: Path) -> str:
    """Read a text file as str: UTF-8 (with or without BOM), or UTF-16 / UTF-32 with a BOM; refuse binaries
    (a NUL character anywhere), FIFOs and devices (never opened: reading one could block or never end) and
    files over MAX_FILE_BYTES."""
    try:
        data = read_regular(path, MAX_FILE_BYTES, "text file")
    except FileNotFoundError:
        raise CorpusError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CorpusError(f"{path} is a folder, not a file") from None
    except OSError as e:
        raise CorpusError(first_line(e)) from None
    except MemoryError:
        raise CorpusError(f"{path.name} is too large to read into memory") from None
    # The UTF-32 BOMs come first: UTF-32-LE's begins with UTF-16-LE's.
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                       (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                raise CorpusError(f"{path.name} starts like {codec.upper()} but is not valid {codec.upper()}") from None
            break
    else:
        if b"\x00" in data:
            raise CorpusError(f"{path.name} looks like a binary file, not text (it holds NUL bytes)")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path.name} is not UTF-8 text (bad byte at offset {e.start})") from None
    if "\x00" in text:
        raise CorpusError(f"{path.name} looks like a binary file, not text (it holds NUL characters)")
    return text


def load_path(path: str | os.PathLike) -> Corpus:
    """A user's text file, or every .txt/.md/.py file under a folder (one document each).

    Only regular files are read (a FIFO or device inside a folder is skipped, one given directly is
    refused), MAX_FOLDER_FILES files at most and MAX_FILE_BYTES in all."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = []
        total = 0
        for f in sorted(p.rglob("*")):
            if f.suffix.lower() not in TEXT_SUFFIXES or not _is_regular(f):
                continue
            files.append(f)
            total += f.stat().st_size
            if len(files) > MAX_FOLDER_FILES or total > MAX_FILE_BYTES:
                raise CorpusError(f"the folder {p} holds more text than a corpus may ({MAX_FOLDER_FILES:,} files "
                                  f"or {MAX_FILE_BYTES / 1e9:.0f} GB in all); pick a smaller folder")
        if not files:
            raise CorpusError(f"the folder {p} has no .txt, .md or .py files")
        docs = [decode_text_file(f) for f in files]
        docs = [d for d in docs if d.strip()]
        if not docs:
            raise CorpusError(f"every text file in {p} is empty")
        return Corpus(p.name, docs, f"{len(docs)} files from {p}", str(p))
    text = decode_text_file(p)
    if not text.strip():
        raise CorpusError(f"{p.name} is empty")
    return Corpus(p.name, [text], f"text file {p}", str(p))


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def corpus_source_problem(name_or_path: str) -> str | None:
    """Why `name_or_path` cannot be a corpus, found without reading it (None when it may be one): a path a
    file names (a checkpoint's saved corpus) must be a regular file or a folder, under the size cap."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        return "no corpus is named"
    if name_or_path in BUILTIN_CORPORA or name_or_path in REMOTE_CORPORA:
        return None
    if len(name_or_path) > 4096 or "\x00" in name_or_path:
        return "it is not a valid path"
    try:
        info = Path(name_or_path).expanduser().stat()
    except OSError:
        return "no such file or folder here"
    if stat.S_ISDIR(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file (a pipe, device or socket)"
    if info.st_size > MAX_FILE_BYTES:
        return f"it is too large ({info.st_size / 1e9:.1f} GB; the limit is {MAX_FILE_BYTES / 1e9:.0f} GB)"
    return None


def load_corpus_job(name_or_path: str) -> Generator[ProgressEvent, None, Corpus]:
    """A built-in or downloadable corpus by name, else a file or folder path.

    Yields the download's progress events when a downloadable corpus is not cached yet, and returns the
    Corpus (`corpus = yield from load_corpus_job(name)` in another job; `load_corpus` runs it to the end)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise CorpusError(f"no corpus given: name a built-in one ({', '.join(corpus_names())}) or a text file "
                          "or folder")
    if name_or_path in BUILTIN_CORPORA:
        spec = BUILTIN_CORPORA[name_or_path]
        return Corpus(name_or_path, spec.build(), spec.description, name_or_path)
    if name_or_path in REMOTE_CORPORA:
        return (yield from load_remote_corpus_job(REMOTE_CORPORA[name_or_path]))
    if len(name_or_path) > 4096 or "\x00" in name_or_path:
        raise CorpusError("the corpus path is not a valid path")
    if not Path(name_or_path).expanduser().exists():
        raise CorpusError(
            f"unknown corpus {printable(name_or_path, 200)!r}: not a built-in ({', '.join(corpus_names())}) and no "
            "such file or folder"
        )
    return load_path(name_or_path)


def load_corpus(name_or_path: str, progress: Callable[[ProgressEvent], None] | None = None) -> Corpus:
    """`load_corpus_job` run to the end; `progress` sees the download's events (the command line's progress
    bar passes itself here)."""
    return run_job(load_corpus_job(name_or_path), progress)


# ---------------------------------------------------------------- tokens and batches

def encode_documents(documents: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """All documents as one id array, joined by the end-of-text token (or a blank line without one)."""
    sep = [tokenizer.eot_id] if tokenizer.eot_id is not None else tokenizer.encode("\n\n")
    ids: list[int] = []
    for i, doc in enumerate(documents):
        if i:
            ids.extend(sep)
        ids.extend(tokenizer.encode(doc))
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    return np.asarray(ids, dtype=dtype)


def cached_encode(corpus: Corpus, tokenizer: Tokenizer) -> np.ndarray:
    """Encode, and keep big results on disk as .npy so they are memory-mapped next time."""
    key = hashlib.sha256()
    key.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    for doc in corpus.documents:
        key.update(hashlib.sha256(doc.encode("utf-8", errors="surrogatepass")).digest())
    path = cache_dir() / "tokens" / f"{key.hexdigest()[:32]}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            pass  # a damaged cache entry: encode again
    ids = encode_documents(corpus.documents, tokenizer)
    if len(ids) >= MMAP_MIN_TOKENS:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Atomic, under a temporary name of this process's own (ranks of a torchrun job may encode the
            # same corpus at once): the file a reader maps is never rewritten in place.
            atomic_write(path, lambda name: np.save(name, ids), suffix=".npy")
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            pass  # no writable cache: keep it in memory
    return ids


@dataclass
class Dataset:
    """Token ids of a corpus, split 90/10 into train and validation, with random batches."""

    corpus: Corpus
    tokenizer: Tokenizer
    ids: np.ndarray = field(repr=False)
    split_at: int = 0

    @classmethod
    def build(cls, corpus: Corpus, tokenizer: Tokenizer, context_length: int | None = None) -> Dataset:
        ids = cached_encode(corpus, tokenizer)
        ds = cls(corpus, tokenizer, ids, int(len(ids) * 0.9))
        if context_length is not None:
            ds.check_fits(context_length)
        return ds

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.split_at]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.split_at:]

    def check_fits(self, context_length: int) -> None:
        """Both splits must hold at least one full window plus its next-token target."""
        need = context_length + 1
        if len(self.val_ids) < need or len(self.train_ids) < need:
            raise CorpusError(
                f"the corpus '{self.corpus.name}' is too short for a context of {context_length} tokens: "
                f"it has {len(self.ids):,} tokens, and the 10% validation split needs at least {need:,} "
                f"(so about {10 * need:,} in all). Use a longer text or a shorter context_length."
            )

    def get_batch(self, split: str, batch_size: int, context_length: int,
                  generator: torch.Generator | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows x (B, T) and their next-token targets y (B, T)."""
        data = self.train_ids if split == "train" else self.val_ids
        starts = torch.randint(len(data) - context_length - 1 + 1, (batch_size,), generator=generator)
        rows = np.stack([np.asarray(data[s: s + context_length + 1], dtype=np.int64) for s in starts.tolist()])
        batch = torch.from_numpy(rows)
        x, y = batch[:, :-1], batch[:, 1:]
        if torch.device(device).type == "cuda":
            # pinned memory + non_blocking lets the copy overlap with compute
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.contiguous().to(device), y.contiguous().to(device)


# ---------------------------------------------------------------- downloadable corpora (tiny-shakespeare)

# tiny-shakespeare (Karpathy's char-rnn corpus, 1,115,394 bytes of ASCII) is downloaded once into the
# user cache and read offline after that. Its sha256 is not published next to the file, so it is checked
# by exact size, UTF-8 text and its first words; the digest of the first good download is written next to
# it and checked on every later read (a damaged cache file is noticed and fetched again).

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
        raise DownloadError(
            f"{corpus.name} is not downloaded yet and could not be fetched ({e}); "
            f"use a built-in corpus instead ({', '.join(BUILTIN_CORPORA)}) or a text file of your own"
        ) from None
    atomic_write_text(_digest_path(path), file_sha256(path) + "\n")


def load_remote_corpus_job(corpus: RemoteCorpus = TINY_SHAKESPEARE) -> Generator[ProgressEvent, None, Corpus]:
    """The corpus as a Corpus, downloading it first if it isn't cached (progress events as it goes)."""
    try:
        yield from fetch_corpus_job(corpus)
    except DownloadError as e:
        raise CorpusError(str(e)) from None
    text = corpus.path.read_text(encoding="utf-8")
    return Corpus(corpus.name, [text], corpus.description, corpus.name)


REMOTE_CORPORA: dict[str, RemoteCorpus] = {TINY_SHAKESPEARE.name: TINY_SHAKESPEARE}
