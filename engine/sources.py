"""Where models come from, and one way to open any of them.

A *source* is what a person types or picks:
- a checkpoint file written here (`.safetensors` with our metadata: engine/checkpoint.py);
- a Hugging Face model folder (config.json, safetensors weights, a tokenizer: engine/hf_import.py);
- the repo id of a model in the Hugging Face cache ("openai-community/gpt2"), found offline (engine/hub.py);
- a GGUF file (llama.cpp's format; engine/gguf_import.py): a `.gguf` path, or any file that starts with the GGUF
  magic (Ollama's blobs have no suffix).

`resolve_source` says which one a text names; `open_model_job` opens it with progress (`open_model` without);
`open_tokenizer` reads only its tokenizer; `describe_source` says what it holds without reading weights;
`list_models` lists the models on this machine: the Hugging Face cache, and the GGUF files of LM Studio, Ollama and
the user's folders (engine/gguf_files.py).
Every failure is a `SourceError` (or the checkpoint's / importer's own ValueError): one line for the user.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.checkpoint import load_checkpoint, read_checkpoint_info, read_checkpoint_tokenizer
from engine.events import ProgressEvent
from engine.gguf_files import find_gguf_files, ollama_blob_name
from engine.gguf_import import describe_gguf, load_gguf_job, load_gguf_tokenizer
from engine.hf_import import (
    HFImportError,
    config_from_hf,
    family_title,
    folder_label,
    load_folder_tokenizer,
    load_hf_folder_job,
    read_hf_config,
)
from engine.hub import find_cached_model, list_cached_models, model_folder_info
from engine.model import GPT
from engine.tokenizers import Tokenizer

CHECKPOINT = "checkpoint"
HF_FOLDER = "hf-folder"
GGUF = "gguf"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceError(ValueError):
    """A model source that can't be found or opened; the message is one line for the user."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # CHECKPOINT, HF_FOLDER or GGUF
    path: Path  # the file or folder
    name: str  # for people: the file's name, the folder's name, or the repo id


@dataclass
class OpenedModel:
    model: GPT
    tokenizer: Tokenizer
    source: ModelSource
    train_state: dict[str, Any] | None = None  # a checkpoint's training state (None for the others)
    problem: str | None = None  # why a checkpoint's training or optimizer state is unusable (it is None then)


def resolve_source(text: str | os.PathLike) -> ModelSource:
    """What a path or repo id names: an existing file or folder, else a complete model in the HF cache."""
    raw = str(text)
    if not raw.strip():
        raise SourceError("no model given")
    path = Path(raw).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SourceError(f"{path} is a folder without config.json (not a Hugging Face model folder)")
        return ModelSource(HF_FOLDER, path, folder_label(path))
    if path.is_file():
        if _is_gguf(path):
            return ModelSource(GGUF, path, ollama_blob_name(path) or path.name)
        return ModelSource(CHECKPOINT, path, path.name)
    if _REPO_ID.match(raw):
        cached = find_cached_model(raw)
        if cached is not None:
            return ModelSource(HF_FOLDER, cached.folder, cached.repo_id)
        raise SourceError(f"no file or folder {raw}, and no complete model {raw} in the Hugging Face cache "
                          f"(python -m engine pull {raw} downloads it)")
    raise SourceError(f"no such file or folder: {raw}")


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _source(source: str | os.PathLike | ModelSource) -> ModelSource:
    return source if isinstance(source, ModelSource) else resolve_source(source)


def open_model_job(source: str | os.PathLike | ModelSource, *, dtype: str = "auto",
                   device: str | torch.device = "cpu") -> Generator[ProgressEvent, None, OpenedModel]:
    """Open a model from any source: yields ProgressEvents, returns an OpenedModel (eval mode, on `device`).

    dtype applies to Hugging Face folders ("auto": the weights' own format, so a bf16 model stays bf16; or
    fp32 / bf16 / fp16) and GGUF files (dequantized once to it; "auto": bf16 for a BF16 file, else fp32);
    checkpoints always open in fp32, as they were trained.
    """
    src = _source(source)
    yield ProgressEvent(job="open", done=0, total=0, message=f"opening {src.name}")
    if src.kind == CHECKPOINT:
        ckpt = load_checkpoint(src.path, device=device)
        return OpenedModel(ckpt.model, ckpt.tokenizer, src, ckpt.train_state,
                           ckpt.train_state_problem or ckpt.optimizer_problem)
    if src.kind == GGUF:
        model, tokenizer = yield from load_gguf_job(src.path, dtype=dtype)
    else:
        model, tokenizer = yield from load_hf_folder_job(src.path, dtype=dtype)
    if torch.device(device).type != "cpu":
        model = model.to(device)
    return OpenedModel(model, tokenizer, src)


def open_model(source: str | os.PathLike | ModelSource, *, dtype: str = "auto",
               device: str | torch.device = "cpu",
               progress: Callable[[ProgressEvent], None] | None = None) -> OpenedModel:
    """`open_model_job` run to its end (progress events go to `progress`, if given)."""
    job = open_model_job(source, dtype=dtype, device=device)
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)


def open_tokenizer(source: str | os.PathLike | ModelSource) -> Tokenizer:
    """Only the tokenizer of a source, without its weights."""
    src = _source(source)
    if src.kind == CHECKPOINT:
        return read_checkpoint_tokenizer(src.path)  # the whole header validated, nothing memory-mapped
    if src.kind == GGUF:
        return load_gguf_tokenizer(src.path)
    return load_folder_tokenizer(src.path)


# ---------------------------------------------------------------- describing

def describe_source(source: str | os.PathLike | ModelSource) -> dict[str, Any]:
    """What a source holds, without reading its weights: for a checkpoint `read_checkpoint_info` (plus "kind");
    for a folder its model_type, our config (or why it can't be opened), parameters and tokenizer; for a GGUF
    file engine.gguf_import.describe_gguf (the same, plus its quantization types)."""
    src = _source(source)
    if src.kind == CHECKPOINT:
        return {"kind": CHECKPOINT, **read_checkpoint_info(src.path)}
    if src.kind == GGUF:
        return describe_gguf(src.path)
    config_json = read_hf_config(src.path)
    try:
        folder = model_folder_info(src.path)
    except ValueError as e:
        raise SourceError(f"{src.name}: {e}") from None
    info: dict[str, Any] = {
        "kind": HF_FOLDER, "path": str(src.path), "name": src.name, "model_type": folder.family,
        "architectures": list(folder.architectures), "weight_files": list(folder.weight_files),
        "file_bytes": sum((src.path / f).stat().st_size for f in folder.weight_files),
        "num_params": folder.n_params, "family": None, "model_config": None, "problem": None, "tokenizer": None,
    }
    try:
        info["family"] = family_title(config_json)
        info["model_config"] = config_from_hf(config_json).to_dict()
        tokenizer = load_folder_tokenizer(src.path)
        info["tokenizer"] = {"type": tokenizer.type_name, "name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                             "description": tokenizer.describe(),
                             "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                             "eos_ids": sorted(getattr(tokenizer, "eos_ids", ()) or ())}
    except HFImportError as e:
        info["problem"] = str(e)
    return info


# ---------------------------------------------------------------- listing

@dataclass(frozen=True)
class ModelEntry:
    """A model on this machine that a person may open."""

    name: str  # repo id or file name
    kind: str  # HF_FOLDER, GGUF, ...
    path: Path
    family: str | None  # config.json's model_type ("gpt2", "llama"...)
    n_params: int
    size_bytes: int
    details: dict[str, Any] = field(default_factory=dict)


def hf_cache_models() -> list[ModelEntry]:
    """Complete causal-LM models in the Hugging Face cache (offline)."""
    return [ModelEntry(m.repo_id, HF_FOLDER, m.folder, m.family, m.n_params, m.size_on_disk,
                       {"revision": m.revision, "refs": list(m.refs), "has_tokenizer": m.has_tokenizer})
            for m in list_cached_models()]


def gguf_models(folders: Iterable[str | os.PathLike] = ()) -> list[ModelEntry]:
    """GGUF files of LM Studio, Ollama and the user's folders (`folders`, plus $LLM_PLAYGROUND_GGUF_DIRS); the family
    is the file's architecture ("llama", "qwen2", "gpt2": the model_type it opens as)."""
    return [ModelEntry(f.name, GGUF, f.path, f.summary.architecture, f.summary.n_params, f.summary.file_bytes,
                       {"place": f.place, "quantization": f.summary.quant_summary})
            for f in find_gguf_files(folders)]


def list_models(gguf_folders: Iterable[str | os.PathLike] = ()) -> list[ModelEntry]:
    """Every model on this machine (the Hugging Face cache, then GGUF files), each group sorted by name."""
    hf = sorted(hf_cache_models(), key=lambda e: e.name.lower())
    return hf + sorted(gguf_models(gguf_folders), key=lambda e: e.name.lower())


def supported_family(model_type: str | None) -> bool:
    """Whether a config.json model_type can be opened by this version."""
    try:
        family_title({"model_type": model_type})
    except HFImportError:
        return False
    return True
