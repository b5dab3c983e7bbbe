"""The Hugging Face hub: which models the user already has (offline), and downloading one with progress.

Everything goes through `huggingface_hub` and its cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`), so a model downloaded here is the same files transformers would use, and a
model transformers downloaded is listed here. Environment variables are read at call time (not at import,
as huggingface_hub's constants are): HF_HUB_CACHE / HF_HOME, HF_ENDPOINT (a mirror or a test server),
HF_TOKEN (through huggingface_hub), HF_HUB_ETAG_TIMEOUT.

`list_cached_models()` never touches the network and never raises for a broken cache entry: a repo
counts only when one of its snapshots is a *complete* causal-LM folder (config.json, and every
safetensors file it needs present with its whole data, checked against the safetensors header). A download
that broke off leaves a snapshot with some files missing or, for files written by other tools, cut short;
such a snapshot is simply not listed, and the next download fills it in. huggingface_hub itself writes
each file to a `.incomplete` temporary first and renames it only when complete.

`download_model_job(repo_id)` fetches only what the engine needs (config / tokenizer JSON, `.jinja` chat
templates, and the safetensors weights: the shards the index names, else model.safetensors, else every
top-level .safetensors), one `hf_hub_download` per file pinned to one commit, in a worker thread so the
generator can report bytes as they arrive and honour a cancel flag. Failures are one `HubError` line:
offline (within ~2 s: the first answer has a deadline, since a DNS lookup can hang far longer than any
socket timeout), gated repo, not found, token refused, cut-off download, cancelled.

One module of about 600 lines on purpose: listing the cache and downloading share the one definition of a
complete model folder (`model_folder_info`, `weight_files_for`) and the cache layout, and this is the only
module that knows huggingface_hub.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.events import ProgressEvent
from engine.files import atomic_write_text

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_DEADLINE_S = 2.0  # the hub's first answer (the repo's file list) must come within this
API_TIMEOUT_S = 10.0  # once connected: the file list request's read timeout
ETAG_TIMEOUT_S = 5.0  # each file's metadata (HEAD) request; HF_HUB_ETAG_TIMEOUT overrides it
CANCEL_GRACE_S = 1.0  # how long a cancelled job waits for the worker to notice before giving up on it
PROGRESS_INTERVAL_S = 0.1  # at most this often a bytes progress event (file starts/ends always get one)
MAX_HEADER_BYTES = 100_000_000  # safetensors' own header limit
MAX_CONFIG_BYTES = 16 * 1024 * 1024
WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class HubError(OSError):
    """Something the hub or the cache could not do; the message is one line for the user."""


class HubOffline(HubError):
    """The hub could not be reached (no network, wrong HF_ENDPOINT, HF_HUB_OFFLINE)."""


class HubAuthError(HubError):
    """A gated or private repo without the right token, or a token the hub refused."""


class HubNotFound(HubError):
    """No such repo, revision or file on the hub."""


class DownloadCancelled(HubError):
    """The download was cancelled; the files that were complete stay in the cache."""


# ---------------------------------------------------------------- environment

def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder as the environment says now (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    def expand(p: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(p)))

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return expand(os.environ[var])
    if os.environ.get("HF_HOME"):
        return expand(os.environ["HF_HOME"]) / "hub"
    return expand(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface" / "hub"


def hub_endpoint() -> str:
    """The hub's address: HF_ENDPOINT (a mirror, a local server) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _host(endpoint: str) -> str:
    return urllib.parse.urlsplit(endpoint).netloc or endpoint


# ---------------------------------------------------------------- safetensors headers

def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a .safetensors file, read without the weights: an 8-byte little-endian length, then
    that much JSON. Bounds are checked, and the file must hold all the data the header describes, so a
    cut-off download is a ValueError here rather than a crash when the weights are loaded."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 8:
            raise ValueError(f"{path.name}: too short to be a safetensors file")
        n = int.from_bytes(head, "little")
        if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path.name}: bad safetensors header length {n:,} (file is {size:,} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path.name}: the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: the safetensors header is not an object")
    data_bytes = size - 8 - n
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{path.name}: tensor {str(name)[:60]!r} has a bad header entry")
        end = max(end, offsets[1])
    if end != data_bytes:
        what = "is cut off (an unfinished download?)" if end > data_bytes else "has bytes no tensor uses"
        raise ValueError(f"{path.name} {what}: the header describes {end:,} data bytes, the file has {data_bytes:,}")
    return header


def count_parameters(header: dict[str, Any]) -> int:
    """The number of weights a safetensors header describes (the product of each tensor's shape)."""
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            n = 1
            for d in entry["shape"]:
                n *= d
            total += n
    return total


# ---------------------------------------------------------------- model folders

@dataclass(frozen=True)
class ModelFolderInfo:
    """A complete causal-LM folder: its config's family and architectures, weights files and size in weights."""

    folder: Path
    family: str | None  # config.json's model_type ("llama", "qwen2", "gpt2"...)
    architectures: tuple[str, ...]
    weight_files: tuple[str, ...]
    n_params: int
    has_tokenizer: bool


def _read_json_file(path: Path) -> Any:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path.name} is too large")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path.name} is not valid JSON") from None


def weight_files_for(names: list[str], index: dict[str, Any] | None) -> list[str]:
    """Which .safetensors files make up the model: the index's shards, else model.safetensors, else every
    top-level one (a repo with both a single file and shards, or a second copy in another format like
    Mistral's consolidated.safetensors, is not fetched twice)."""
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{WEIGHTS_INDEX} has no weight_map")
        shards = sorted({v for v in weight_map.values() if isinstance(v, str)})
        if not shards or any(not s.endswith(".safetensors") or "/" in s or "\\" in s or s.startswith(".")
                             for s in shards):
            raise ValueError(f"{WEIGHTS_INDEX} names a weights file that is not a top-level .safetensors file")
        return shards
    if SINGLE_WEIGHTS in names:
        return [SINGLE_WEIGHTS]
    return sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)


def model_folder_info(folder: str | os.PathLike) -> ModelFolderInfo:
    """Check that a folder is a complete causal-LM model (config.json, all weights whole); ValueError says what's
    wrong. Use it before opening a folder, e.g. a snapshot a broken download left behind."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder.name}: no config.json")
    config = _read_json_file(config_path)
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    archs = config.get("architectures") or []
    architectures = tuple(a for a in archs if isinstance(a, str)) if isinstance(archs, list) else ()
    if architectures and not any(a.endswith(CAUSAL_LM_SUFFIXES) for a in architectures):
        raise ValueError(f"{folder.name}: {architectures[0]} is not a causal language model")
    names = [p.name for p in folder.iterdir()]
    index = _read_json_file(folder / WEIGHTS_INDEX) if WEIGHTS_INDEX in names else None
    if index is not None and not isinstance(index, dict):
        raise ValueError(f"{WEIGHTS_INDEX} is not a JSON object")
    weights = weight_files_for(names, index)
    if not weights:
        raise ValueError(f"{folder.name}: no .safetensors weights")
    n_params = 0
    for name in weights:
        if not (folder / name).is_file():
            raise ValueError(f"{name} is missing (an unfinished download?)")
        n_params += count_parameters(read_safetensors_header(folder / name))
    family = config.get("model_type")
    return ModelFolderInfo(folder, family if isinstance(family, str) else None, architectures, tuple(weights),
                           n_params, (folder / "tokenizer.json").is_file())


# ---------------------------------------------------------------- the cache

@dataclass(frozen=True)
class CachedModel:
    """A model in the Hugging Face cache that can be opened: one complete snapshot of a repo."""

    repo_id: str
    folder: Path  # the snapshot folder (files are symlinks into the repo's blobs)
    revision: str  # the snapshot's commit hash
    refs: tuple[str, ...]  # branch/tag names pointing at it ("main")
    size_on_disk: int  # bytes of the snapshot's files
    family: str | None  # config.json's model_type
    n_params: int  # from the safetensors headers
    architectures: tuple[str, ...]
    has_tokenizer: bool  # a tokenizer.json is there


def list_cached_models(cache_dir: str | os.PathLike | None = None) -> list[CachedModel]:
    """Complete causal-LM models in the HF cache, by repo id; offline, and empty rather than failing."""
    from huggingface_hub import scan_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)  # broken repos land in info.warnings, not in info.repos
    except (OSError, ValueError):
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        # The snapshot "main" points at first, then the newest; the first complete one counts.
        revisions = sorted(repo.revisions, key=lambda r: ("main" not in r.refs, -r.last_modified))
        for rev in revisions:
            try:
                folder = model_folder_info(rev.snapshot_path)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            models.append(CachedModel(repo.repo_id, Path(rev.snapshot_path), rev.commit_hash, tuple(sorted(rev.refs)),
                                      rev.size_on_disk, folder.family, folder.n_params, folder.architectures,
                                      folder.has_tokenizer))
            break
    return sorted(models, key=lambda m: m.repo_id.lower())


def find_cached_model(repo_id: str, cache_dir: str | os.PathLike | None = None) -> CachedModel | None:
    """The complete cached snapshot of a repo, or None (offline)."""
    return next((m for m in list_cached_models(cache_dir) if m.repo_id == repo_id), None)


# ---------------------------------------------------------------- downloads

@dataclass(frozen=True)
class HubDownloadProgress(ProgressEvent):
    """Progress of a model download: `done`/`total` are bytes over all files, the rest is the current file."""

    repo_id: str = ""
    file: str = ""
    file_done: int = 0
    file_total: int = 0
    files_done: int = 0
    n_files: int = 0


def wanted_files(siblings: dict[str, int | None], index: dict[str, Any] | None) -> list[str]:
    """The repo files the engine needs: top-level JSON and .jinja files, then the weights (see weight_files_for).
    Sub-folders (onnx/, original/, gguf copies) are skipped."""
    top = [n for n in siblings if "/" not in n]
    small = sorted(n for n in top if n.endswith((".json", ".jinja")))
    weights = weight_files_for(top, index)
    missing = [w for w in weights if w not in siblings]
    if missing:
        raise ValueError(f"{WEIGHTS_INDEX} names {missing[0]}, which the repo doesn't have")
    return small + weights


class _Cancelled(Exception):
    """Raised inside the worker (from a progress callback) to stop a download."""


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """refs/<revision> -> commit, as huggingface_hub records which snapshot a branch name means."""
    if revision == commit or ".." in revision.split("/") or revision.startswith("/"):
        return
    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ref, commit)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _network_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(transport errors, connect errors) of the HTTP library this huggingface_hub uses: httpx2 (2.x), httpx
    (1.x) or requests (0.x). Connect errors mean the server was never reached."""
    import importlib

    transport: list[type[BaseException]] = []
    connect: list[type[BaseException]] = []
    for module, transport_names, connect_names in (("httpx2", ("TransportError",), ("ConnectError",)),
                                                   ("httpx", ("TransportError",), ("ConnectError",)),
                                                   ("requests.exceptions", ("RequestException",), ("ConnectionError",))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        transport += [getattr(mod, n) for n in transport_names if hasattr(mod, n)]
        connect += [getattr(mod, n) for n in connect_names if hasattr(mod, n)]
    return tuple(transport), tuple(connect)


def _as_hub_error(e: BaseException, repo_id: str, revision: str, endpoint: str, token_sent: bool,
                  file: str | None, file_done: int, file_total: int, cache: Path) -> HubError:
    """One line for the user from whatever huggingface_hub / httpx raised (`file`: the file being fetched)."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    transport_errors, connect_errors = _network_errors()
    host = _host(endpoint)
    if isinstance(e, HubError):
        return e
    if isinstance(e, _Cancelled):
        return DownloadCancelled(f"download of {repo_id} cancelled; the files already complete stay in the cache")
    if isinstance(e, OfflineModeIsEnabled):
        return HubOffline("the Hugging Face hub is switched off here (HF_HUB_OFFLINE is set)")
    if isinstance(e, LocalEntryNotFoundError):  # the metadata request failed: the cause says why
        cause = e.__cause__ or e.__context__
        e = cause if cause is not None else e
    status = getattr(getattr(e, "response", None), "status_code", None)
    page = f"{endpoint}/{repo_id}"
    if isinstance(e, GatedRepoError):
        if status == 403 or token_sent:
            return HubAuthError(f"{repo_id} is gated and this token has no access: accept its conditions at {page} "
                                "with the token's account")
        return HubAuthError(f"{repo_id} is gated: accept its conditions at {page} and set a token (HF_TOKEN)")
    if isinstance(e, RevisionNotFoundError):
        return HubNotFound(f"{repo_id} has no revision {revision!r}")
    if isinstance(e, EntryNotFoundError):
        return HubNotFound(f"{repo_id}: {file or 'a file'} is not on the hub")
    if isinstance(e, RepositoryNotFoundError):
        hint = "" if token_sent else " (if it is private, set a token that can read it)"
        return HubNotFound(f"{repo_id} was not found on {host}{hint}")
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        if status == 401 and token_sent:
            return HubAuthError(f"{host} refused the token (HTTP 401): check HF_TOKEN or the token given")
        return HubAuthError(f"{host} denied access to {repo_id} (HTTP {status}): a token with access is needed")
    if isinstance(e, (*transport_errors, HfHubHTTPError)) or (
            isinstance(e, OSError) and "Consistency check failed" in str(e)):
        if file is not None and (file_done > 0 or not isinstance(e, connect_errors)):
            # The file had started (or its server stopped answering properly): nothing half-written is kept.
            at = ""
            if file_done:
                at = f" at {file_done:,} of {file_total:,} bytes" if file_total else f" at {file_done:,} bytes"
            detail = f"HTTP {status}" if status else _reason(e)
            return HubError(f"download of {file} broke off{at} ({detail}); run again to fetch it again")
        if isinstance(e, HfHubHTTPError):
            return HubError(f"{host} answered HTTP {status} for {file or repo_id}")
        return HubOffline(f"cannot reach {host} (offline?): {_reason(e)}")
    if isinstance(e, OSError):
        return HubError(f"cannot write to the Hugging Face cache {cache}: {e.strerror or _reason(e)}")
    return HubError(f"download of {repo_id} failed: {type(e).__name__}: {_reason(e)}")


def download_model_job(repo_id: str, *, revision: str = "main", token: str | bool | None = None,
                       cancel: Callable[[], bool] | None = None, endpoint: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> Iterator[HubDownloadProgress | Path]:
    """Download a model's config, tokenizer, chat template and safetensors weights into the HF cache.

    Yields HubDownloadProgress events, then (last) the Path of the complete snapshot folder. Files already
    in the cache are not fetched again. token: a string, None (HF_TOKEN or the saved login) or False (none).
    cancel: polled while downloading; when it returns True the job stops (mid-file where huggingface_hub
    reports bytes, else before the next file) and raises DownloadCancelled. Closing the generator stops the
    worker the same way. Every failure is a HubError with one line (see the module docstring).
    What was complete stays in the cache; a file cut short is never kept, so the next run picks up from there.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubNotFound(f"{str(repo_id)[:100]!r} is not a Hugging Face repo id (like 'Qwen/Qwen2.5-0.5B')") from None
    if not isinstance(revision, str) or not revision or ".." in revision.split("/") or len(revision) > 256:
        raise HubNotFound(f"bad revision {str(revision)[:60]!r}")
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    token_sent = isinstance(token, str) or (token is None and bool(
        os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")))
    messages: queue.Queue = queue.Queue()
    stop = threading.Event()
    state = {"file": None, "done": 0, "total": 0}

    class Bar:
        """What huggingface_hub takes as a tqdm class: reports bytes, and raises to cancel."""

        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            self.total = total
            messages.put(("bytes", initial))

        def update(self, n: float = 1) -> None:
            if stop.is_set():
                raise _Cancelled()
            self.n += int(n)
            messages.put(("bytes", self.n))

        def update_transfer(self, n: float = 1) -> None:
            """Network bytes (Xet downloads report them apart from bytes written); having this method makes
            huggingface_hub use one bar per file, so `update` counts bytes on disk only."""
            if stop.is_set():
                raise _Cancelled()

        def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...

        def close(self) -> None: ...

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...

        def set_description(self, *args: Any, **kwargs: Any) -> None: ...

        def refresh(self, *args: Any, **kwargs: Any) -> None: ...

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *args: Any) -> None: ...

    def work() -> None:
        import inspect

        from huggingface_hub import HfApi, hf_hub_download

        # Older huggingface_hub has no tqdm_class here: progress then comes per file, cancel between files.
        bar = {"tqdm_class": Bar} if "tqdm_class" in inspect.signature(hf_hub_download).parameters else {}

        try:
            info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True,
                                                       token=token, timeout=API_TIMEOUT_S)
            messages.put(("connected",))
            commit = info.sha
            if not isinstance(commit, str) or not commit:
                raise HubError(f"{_host(endpoint)} did not say which commit {repo_id}@{revision} is")
            siblings = {s.rfilename: s.size for s in (info.siblings or [])}

            def fetch(name: str) -> Path:
                if stop.is_set():
                    raise _Cancelled()
                messages.put(("file", name, siblings.get(name) or 0))
                path = hf_hub_download(repo_id, name, revision=commit, cache_dir=cache, endpoint=endpoint,
                                       token=token, etag_timeout=ETAG_TIMEOUT_S, **bar)
                messages.put(("file_done", name))
                return Path(path)

            index = None
            if WEIGHTS_INDEX in siblings:  # fetched first: it says which shards to fetch
                try:
                    index = json.loads(fetch(WEIGHTS_INDEX).read_text(encoding="utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise HubError(f"{repo_id}: {WEIGHTS_INDEX} is not valid JSON") from None
                if not isinstance(index, dict):
                    raise HubError(f"{repo_id}: {WEIGHTS_INDEX} is not a JSON object")
            try:
                files = wanted_files(siblings, index)
            except ValueError as e:
                raise HubError(f"{repo_id}: {e}") from None
            if "config.json" not in files:
                raise HubNotFound(f"{repo_id} has no config.json: not a transformers model")
            if not any(f.endswith(".safetensors") for f in files):
                raise HubNotFound(f"{repo_id} has no .safetensors weights (other formats are not supported)")
            messages.put(("plan", [(f, siblings.get(f) or 0) for f in files]))
            folder = None
            for name in files:
                if name != WEIGHTS_INDEX:
                    folder = fetch(name).parent
                else:
                    messages.put(("file_done", name))
            assert folder is not None
            storage = folder.parent.parent
            _write_ref(storage, revision, commit)
            try:
                model_folder_info(folder)
            except ValueError as e:
                raise HubError(f"{repo_id} downloaded but is not usable: {e}") from None
            messages.put(("finished", folder))
        except BaseException as e:  # everything goes to the generator's thread
            messages.put(("error", e))

    thread = threading.Thread(target=work, name=f"hub-download {repo_id}", daemon=True)
    thread.start()
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    cancelled_at: float | None = None
    connected = False
    plan: dict[str, int] = {}
    done_files: set[str] = set()
    last_event = 0.0

    def event(message: str) -> HubDownloadProgress:
        done_bytes = sum(plan[f] for f in done_files if f in plan)
        current = state["file"]
        if current is not None and current not in done_files:
            done_bytes += state["done"]
        return HubDownloadProgress(f"download {repo_id}", float(done_bytes), float(sum(plan.values())), message,
                                   repo_id=repo_id, file=current or "", file_done=state["done"],
                                   file_total=state["total"], files_done=len(done_files & set(plan)),
                                   n_files=len(plan))

    try:
        while True:
            if cancel is not None and cancelled_at is None and cancel():
                stop.set()
                cancelled_at = time.monotonic()
            try:
                msg = messages.get(timeout=0.05)
            except queue.Empty:
                now = time.monotonic()
                if not connected and now > deadline:
                    raise HubOffline(
                        f"{_host(endpoint)} did not answer within {CONNECT_DEADLINE_S:g} s (offline?)") from None
                if cancelled_at is not None and now > cancelled_at + CANCEL_GRACE_S:
                    raise DownloadCancelled(f"download of {repo_id} cancelled; the files already complete stay "
                                            "in the cache") from None
                continue
            kind = msg[0]
            if kind == "connected":
                connected = True
            elif kind == "plan":
                plan = dict(msg[1])
                yield event(f"downloading {len(plan)} files of {repo_id}")
            elif kind == "file":
                state.update(file=msg[1], done=0, total=msg[2])
                if plan:
                    yield event(f"downloading {msg[1]}")
            elif kind == "bytes":
                state["done"] = msg[1]
                now = time.monotonic()
                if plan and now - last_event >= PROGRESS_INTERVAL_S:
                    last_event = now
                    yield event(f"downloading {state['file']}")
            elif kind == "file_done":
                done_files.add(msg[1])
                state["done"] = plan.get(msg[1], state["done"])
                if plan:
                    yield event(f"downloaded {msg[1]}")
            elif kind == "finished":
                yield Path(msg[1])
                return
            elif kind == "error":
                current = state["file"] if state["file"] not in done_files else None
                raise _as_hub_error(msg[1], repo_id, revision, endpoint, token_sent, current, state["done"],
                                    state["total"], cache) from None
            else:  # the worker and this loop disagree: a bug, not a user's problem
                raise AssertionError(f"unknown download message {kind!r}")
    finally:
        stop.set()  # closing the generator (or any failure here) stops the worker at its next chunk


def download_model(repo_id: str, progress: Callable[[HubDownloadProgress], None] | None = None,
                   **kwargs: Any) -> Path:
    """Run `download_model_job` to the end; returns the snapshot folder."""
    for item in download_model_job(repo_id, **kwargs):
        if isinstance(item, Path):
            return item
        if progress is not None:
            progress(item)
    raise HubError(f"download of {repo_id} ended without a folder")
