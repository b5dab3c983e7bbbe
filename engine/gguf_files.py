"""GGUF files already on this machine: LM Studio's models folder, Ollama's store, and folders the user adds.

- LM Studio keeps downloads as plain `.gguf` files under `~/.lmstudio/models/PUBLISHER/REPO/` (older
  versions: `~/.cache/lm-studio/models/`). Vision projectors (`mmproj-*.gguf`) sit beside them and are left out.
- Ollama keeps content-addressed blobs: `~/.ollama/models/manifests/HOST/NAMESPACE/MODEL/TAG` is a JSON manifest
  whose layer of media type `application/vnd.ollama.image.model` names the model's GGUF blob by digest,
  `blobs/sha256-<hex>`. $OLLAMA_MODELS moves the whole store. A model is listed as Ollama names it
  (`qwen2.5:0.5b`; `namespace/model:tag` outside the library, `host/...` outside registry.ollama.ai).
- Folders the user adds: $LLM_PLAYGROUND_GGUF_DIRS (separated like PATH) and whatever the caller passes
  (the app keeps its list in its settings; the CLI takes --gguf-dir). Searched recursively.

Only the headers are read (engine.gguf_reader.read_gguf_summary), so listing is quick; an unreadable file or
manifest is skipped, never an error: a listing shows what can be found.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.gguf_reader import GGUFError, GGUFSummary, read_gguf_summary

LMSTUDIO = "LM Studio"
OLLAMA = "Ollama"
FOLDER = "folder"
GGUF_DIRS_ENV = "LLM_PLAYGROUND_GGUF_DIRS"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 10_000  # per folder: a user who adds their home folder gets a listing, not a hang


@dataclass(frozen=True)
class FoundGGUF:
    """A GGUF file found in one of the usual places."""

    name: str  # how its tool names it: "publisher/repo/file.gguf", "qwen2.5:0.5b", or the path
    path: Path
    place: str  # LMSTUDIO, OLLAMA or FOLDER
    summary: GGUFSummary


def lmstudio_folders() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_folder() -> Path:
    override = os.environ.get("OLLAMA_MODELS")
    return Path(override).expanduser() if override else Path.home() / ".ollama" / "models"


def user_folders(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """$LLM_PLAYGROUND_GGUF_DIRS, then `extra`, without repeats."""
    listed = [p for p in os.environ.get(GGUF_DIRS_ENV, "").split(os.pathsep) if p.strip()]
    folders: list[Path] = []
    for p in [*listed, *extra]:
        path = Path(p).expanduser()
        if path not in folders:
            folders.append(path)
    return folders


def _summary(path: Path) -> GGUFSummary | None:
    try:
        return read_gguf_summary(path)
    except GGUFError:
        return None


def _gguf_paths(folder: Path) -> Iterator[Path]:
    """The .gguf files under a folder (sorted, at most MAX_FILES), without vision projectors."""
    try:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".gguf" and p.is_file())
    except OSError:
        return
    for path in paths[:MAX_FILES]:
        if not path.name.lower().startswith("mmproj"):
            yield path


def _in_folder(folder: Path, place: str) -> list[FoundGGUF]:
    found = []
    for path in _gguf_paths(folder):
        summary = _summary(path)
        if summary is not None:
            name = path.relative_to(folder).as_posix() if place == LMSTUDIO else str(path)
            found.append(FoundGGUF(name, path, place, summary))
    return found


def ollama_name(manifest: Path, manifests: Path) -> str:
    """Ollama's name for a manifest file: HOST/NAMESPACE/MODEL/TAG -> model:tag (library models on its registry)."""
    parts = manifest.relative_to(manifests).parts
    *where, model, tag = parts
    if where == [OLLAMA_REGISTRY, "library"]:
        return f"{model}:{tag}"
    if where and where[0] == OLLAMA_REGISTRY:
        where = where[1:]
    return "/".join([*where, model]) + f":{tag}"


def _ollama_blob(manifest: Path, blobs: Path) -> Path | None:
    """The model blob a manifest names, if it is there."""
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER:
            digest = layer.get("digest")
            if isinstance(digest, str) and digest.startswith("sha256:") and digest[7:].isalnum():
                blob = blobs / digest.replace(":", "-")
                return blob if blob.is_file() else None
    return None


def ollama_models(root: Path | None = None) -> list[FoundGGUF]:
    """The models of an Ollama store (default: ollama_folder()) whose blob is there and is a GGUF file."""
    root = ollama_folder() if root is None else root
    manifests, blobs = root / "manifests", root / "blobs"
    try:
        files = sorted(p for p in manifests.rglob("*") if p.is_file())
    except OSError:
        return []
    found = []
    for manifest in files[:MAX_FILES]:
        if len(manifest.relative_to(manifests).parts) < 2:
            continue
        blob = _ollama_blob(manifest, blobs)
        summary = _summary(blob) if blob is not None else None
        if summary is not None:
            found.append(FoundGGUF(ollama_name(manifest, manifests), blob, OLLAMA, summary))
    return found


def ollama_blob_name(path: str | os.PathLike) -> str | None:
    """The Ollama name of a model blob (`.../models/blobs/sha256-...`), from its store's manifests; None for a file
    that is not one."""
    path = Path(path)
    if path.parent.name != "blobs" or not path.name.startswith("sha256-"):
        return None
    manifests = path.parent.parent / "manifests"
    try:
        files = sorted(p for p in manifests.rglob("*") if p.is_file())
    except OSError:
        return None
    for manifest in files[:MAX_FILES]:
        if len(manifest.relative_to(manifests).parts) >= 2 and _ollama_blob(manifest, path.parent) == path:
            return ollama_name(manifest, manifests)
    return None


def find_gguf_files(extra_folders: Iterable[str | os.PathLike] = ()) -> list[FoundGGUF]:
    """Every GGUF file in LM Studio's folders, Ollama's store and the user's folders (see the module docstring);
    a file reachable from two places is listed once."""
    found = [f for folder in lmstudio_folders() for f in _in_folder(folder, LMSTUDIO)]
    found += ollama_models()
    for folder in user_folders(extra_folders):
        found += _in_folder(folder, FOLDER)
    unique, seen = [], set()
    for f in found:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique
