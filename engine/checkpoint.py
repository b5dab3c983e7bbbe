"""Checkpoints: one .safetensors file with the weights, the tokenizer, the training state and the
optimizer state, so a file alone is enough to generate, to inspect, or to resume training exactly.

Layout (format version 1):
- tensors: the model's state dict, without `head.weight` when it is tied to `tok_emb.weight` (stored once and
  re-tied on load; config.tie_embeddings, always true for gpt2), plus `optimizer.<param name>.<exp_avg|exp_avg_sq|step>` when optimizer state is saved;
- metadata (string -> string, each value JSON): `format` ("llm-playground-checkpoint"), `format_version`,
  `model_config`, `tokenizer` (Tokenizer.to_dict()), and optionally `train_state` (step, train config,
  corpus, tokenizer spec, loss history, RNG states) and `optimizer` (AdamW hyperparameters per group,
  parameters listed by name).

Loading never trusts the file: only regular files are opened (never a FIFO or a device); the header is read
and bounds-checked by hand (JSON with a depth limit), the config is validated and every tensor's name, dtype,
shape and byte range is checked against it, and the byte ranges must tile the data exactly (no overlap, no
trailing junk), all *before* anything is allocated; one validator serves `info` and loading. The tensors are
then read into memory (not memory-mapped: a file rewritten in place under a mapping kills the reader with
SIGBUS) and the file's inode, size and times are compared before and after, so a file changed mid-read is an
error, not garbage. Values are checked to be finite. The training and optimizer states are checked field by
field (engine/train_state.py); when one is unusable the weights still load and the problem is reported where
the state would be used (resume). Every failure is a one-line `CheckpointError`. Never pickle.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from engine.config import ModelConfig
from engine.files import atomic_write, first_line, open_regular
from engine.model import GPT
from engine.tokenizers import Tokenizer, tokenizer_from_dict
from engine.train_state import GROUP_SETTINGS, check_optimizer_meta, check_train_state
from engine.validate import parse_json, printable, short_repr

FORMAT = "llm-playground-checkpoint"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit; a bigger claim is a corrupt or hostile file
TIED = "head.weight"  # when tied, stored once, as tok_emb.weight
OPTIMIZER_PREFIX = "optimizer."
OPTIMIZER_KEYS = ("exp_avg", "exp_avg_sq", "step")

DTYPES = {
    "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8), "I64": (torch.int64, 8), "I32": (torch.int32, 4), "U8": (torch.uint8, 1),
}
WEIGHT_DTYPES = ("F32", "F16", "BF16")


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message is one line for the user."""


@dataclass
class Checkpoint:
    config: ModelConfig
    model: GPT
    tokenizer: Tokenizer
    train_state: dict[str, Any] | None
    optimizer_state: dict[str, Any] | None  # {"param_groups": [...names...], "state": {name: {key: tensor}}}
    path: str
    train_state_problem: str | None = None  # why the file's training state is unusable (it is None then)
    optimizer_problem: str | None = None  # why its optimizer state is unusable (it is None then)


# ---------------------------------------------------------------- saving

def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain GPT inside torch.compile / DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model


def optimizer_state_by_name(optimizer: torch.optim.Optimizer, model: torch.nn.Module
                            ) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name (robust to parameter order) instead of index."""
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    groups, state = [], {}
    for group in optimizer.param_groups:
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k in GROUP_SETTINGS}
        settings = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in settings.items()}
        param_names = []
        for p in group["params"]:
            if id(p) not in names:
                raise CheckpointError("the optimizer holds a parameter the model does not have")
            name = names[id(p)]
            param_names.append(name)
            if p in optimizer.state and optimizer.state[p]:
                state[name] = {k: v for k, v in optimizer.state[p].items() if k in OPTIMIZER_KEYS}
        groups.append({**settings, "params": param_names})
    return {"param_groups": groups, "state": state}


def load_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                         saved: dict[str, Any]) -> None:
    """Put a name-keyed optimizer state (from a checkpoint) into an optimizer over `model`'s parameters."""
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    current = optimizer.state_dict()
    saved_groups = saved.get("param_groups", [])
    if len(saved_groups) != len(optimizer.param_groups):
        raise CheckpointError("the saved optimizer state does not match this model's parameter groups")
    new_state: dict[int, Any] = {}
    index = 0
    for group, saved_group, cur_group in zip(optimizer.param_groups, saved_groups, current["param_groups"]):
        group_names = [names.get(id(p)) for p in group["params"]]
        if group_names != list(saved_group.get("params", [])):
            raise CheckpointError("the saved optimizer state does not match this model's parameters")
        for name in group_names:
            if name in saved["state"]:
                new_state[index] = dict(saved["state"][name])
            index += 1
        for key in GROUP_SETTINGS:
            if key in saved_group:
                value = saved_group[key]
                cur_group[key] = tuple(value) if key == "betas" else value
    optimizer.load_state_dict({"state": new_state, "param_groups": current["param_groups"]})


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, tokenizer: Tokenizer, *,
                    train_state: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write a checkpoint atomically: a temp file in the target folder, fsync, then os.replace.

    An existing file at `path` is untouched until the new one is complete.
    """
    path = Path(path).expanduser()
    gpt = unwrap_model(model)
    tied = gpt.config.tie_embeddings
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in gpt.state_dict().items() if not (tied and k == TIED)}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": _json(gpt.config.to_dict()),
        "tokenizer": _json(tokenizer.to_dict()),
    }
    if train_state is not None:
        metadata["train_state"] = _json(train_state)
    if optimizer is not None:
        by_name = optimizer_state_by_name(optimizer, gpt)
        metadata["optimizer"] = _json({"type": type(optimizer).__name__, "param_groups": by_name["param_groups"]})
        for name, entries in by_name["state"].items():
            for key, value in entries.items():
                value = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                tensors[f"{OPTIMIZER_PREFIX}{name}.{key}"] = value.detach().to("cpu", torch.float32).contiguous()

    try:
        atomic_write(path, lambda name: save_file(tensors, name, metadata=metadata))
    except Exception as e:  # safetensors' own errors are not OSErrors; a save must never escape as a traceback
        reason = getattr(e, "strerror", None) or first_line(e)
        raise CheckpointError(f"cannot save to {path}: {reason}") from None
    return path


# ---------------------------------------------------------------- reading and validating

@dataclass
class _Header:
    path: Path
    file_bytes: int
    data_start: int  # where the tensor bytes begin
    metadata: dict[str, str]
    tensors: dict[str, dict[str, Any]]
    config: ModelConfig
    tokenizer_dict: dict[str, Any]
    train_state: dict[str, Any] | None
    train_state_problem: str | None
    optimizer_meta: dict[str, Any] | None
    optimizer_problem: str | None


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(f"{printable(path.name, 120)}: {message}")


def _open(path: Path):
    """The checkpoint file, opened for reading: never a FIFO or a device (see files.open_regular)."""
    try:
        return open_regular(path, what="checkpoint file")
    except FileNotFoundError:
        raise CheckpointError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(first_line(e)) from None


def _identity(f, path: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten: its inode (a new file renamed over it) and, for the same
    inode, its size and modification times (written in place, as `cp` does)."""
    st = os.fstat(f.fileno())
    try:
        inode_now = os.stat(path).st_ino
    except OSError:
        inode_now = -1  # deleted or renamed away
    return st.st_dev, st.st_ino, inode_now, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _check_unchanged(f, path: Path, before: tuple[int, ...]) -> None:
    if _identity(f, path) != before:
        raise _fail(path, "the file changed while it was being read (is another program writing it?); "
                          "open it again when it is complete")


def _read_raw_header(f, path: Path) -> tuple[dict[str, Any], int, int, int]:
    """(header JSON, bytes of tensor data, file size, where the data starts) of an open file."""
    try:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _fail(path, "file is too short to be a checkpoint (empty or truncated)")
        (n,) = struct.unpack("<Q", prefix)
        if n < 2 or n > MAX_HEADER_BYTES:
            raise _fail(path, "not a safetensors checkpoint (bad header length)")
        if 8 + n > size:
            raise _fail(path, "file is truncated (header runs past the end of the file)")
        raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) < n:
        raise _fail(path, "the file changed while it was being read (it became shorter)")
    try:
        header = parse_json(raw.decode("utf-8"), "header")
    except (UnicodeDecodeError, ValueError):
        raise _fail(path, "not a safetensors checkpoint (the header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise _fail(path, "not a safetensors checkpoint (the header is not a JSON object)")
    return header, size - 8 - n, size, 8 + n


def _parse_json_field(path: Path, metadata: dict[str, str], key: str, required: bool) -> Any:
    if key not in metadata:
        if required:
            raise _fail(path, f"checkpoint metadata has no '{key}'")
        return None
    try:
        value = parse_json(metadata[key], f"checkpoint metadata '{key}'")
    except ValueError as e:
        raise _fail(path, str(e)) from None
    if not isinstance(value, dict):
        raise _fail(path, f"checkpoint metadata '{key}' must be a JSON object")
    return value


def _meta_model(config: ModelConfig) -> GPT:
    # A model on the meta device has shapes but no storage: free even for a huge config.
    with torch.device("meta"):
        return GPT(config)


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = {k: tuple(v.shape) for k, v in _meta_model(config).state_dict().items()}
    if config.tie_embeddings:
        shapes.pop(TIED)
    return shapes


def _check_tensor_entry(path: Path, name: str, entry: Any, data_bytes: int) -> None:
    if not isinstance(entry, dict):
        raise _fail(path, f"tensor {printable(name, 80)!r} has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(path, f"tensor {printable(name, 80)!r} has an unsupported dtype {short_repr(dtype)}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape)):
        raise _fail(path, f"tensor {printable(name, 80)!r} has a malformed shape")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < 2**62 for o in offsets)
            or offsets[0] > offsets[1]):
        raise _fail(path, f"tensor {printable(name, 80)!r} has malformed data offsets")
    if offsets[1] > data_bytes:
        raise _fail(path, "file is truncated (tensor data runs past the end of the file)")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype][1]:
        raise _fail(path, f"tensor {printable(name, 80)!r}: its byte range does not match its shape")


def _check_layout(path: Path, tensors: dict[str, dict[str, Any]], data_bytes: int) -> None:
    """The tensors' byte ranges tile the data section exactly, as safetensors requires: no two overlap,
    no gap between them, nothing after the last one."""
    end = 0
    for start, stop in sorted(tuple(entry["data_offsets"]) for entry in tensors.values()):
        if start != end:
            raise _fail(path, "tensors overlap or leave gaps in the file (corrupt or hand-made)")
        end = stop
    if end != data_bytes:
        raise _fail(path, f"the file has {data_bytes - end:,} bytes of junk after its tensors (corrupt)")


def _validate(path: Path, header: dict[str, Any], data_bytes: int, file_bytes: int, data_start: int) -> _Header:
    """Everything checkable from the header, before any tensor byte is read: the one validator behind
    `read_checkpoint_info` (`info`) and `load_checkpoint` (`generate`, training, the app)."""
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "not a safetensors checkpoint (malformed metadata)")
    if metadata.get("format") != FORMAT:
        raise _fail(path, "a safetensors file, but not an LLM Playground checkpoint "
                          "(Hugging Face models can be imported instead)")
    version_text = metadata.get("format_version", "")
    if not (version_text.isascii() and version_text.isdigit() and len(version_text) <= 6):
        raise _fail(path, "checkpoint has no valid format_version")
    version = int(version_text)
    if version < 1 or version > FORMAT_VERSION:
        raise _fail(path, f"checkpoint format version {version} is not supported (this version reads "
                          f"up to {FORMAT_VERSION}); update LLM Playground")

    config_dict = _parse_json_field(path, metadata, "model_config", required=True)
    try:
        config = ModelConfig.from_dict(config_dict)
    except (TypeError, ValueError) as e:
        raise _fail(path, f"invalid model config: {first_line(e, 200)}") from None
    tokenizer_dict = _parse_json_field(path, metadata, "tokenizer", required=True)
    train_state = _parse_json_field(path, metadata, "train_state", required=False)
    optimizer_meta = _parse_json_field(path, metadata, "optimizer", required=False)

    for name, entry in header.items():
        _check_tensor_entry(path, name, entry, data_bytes)
    # Weights take at least 2 bytes per parameter: a config far bigger than the file is a lie.
    if config.num_params() * 2 > data_bytes:
        raise _fail(path, "the model config is larger than the weights in the file (corrupt or truncated)")

    expected = _expected_shapes(config)
    for name, shape in expected.items():
        if name not in header:
            raise _fail(path, f"checkpoint is missing tensor {name!r}")
        if tuple(header[name]["shape"]) != shape:
            raise _fail(path, f"tensor {name!r} has shape {tuple(header[name]['shape'])}, the config needs {shape}")
        if header[name]["dtype"] not in WEIGHT_DTYPES:
            raise _fail(path, f"tensor {name!r} has dtype {header[name]['dtype']}, expected a float type")
    for name in header:
        if name in expected:
            continue
        if not name.startswith(OPTIMIZER_PREFIX):
            raise _fail(path, f"unexpected tensor {printable(name, 80)!r} (not part of this model)")
        param, _, key = name[len(OPTIMIZER_PREFIX):].rpartition(".")
        if param not in expected or key not in OPTIMIZER_KEYS:
            raise _fail(path, f"unexpected optimizer tensor {printable(name, 80)!r}")
        want = () if key == "step" else expected[param]
        if tuple(header[name]["shape"]) != want or header[name]["dtype"] not in WEIGHT_DTYPES:
            raise _fail(path, f"optimizer tensor {name!r} has the wrong shape or dtype")
    _check_layout(path, header, data_bytes)

    # The training and optimizer states are only needed to resume: a bad one is reported where it is
    # used (resume refuses it, `info` says so) while the weights stay usable.
    train_state_problem = optimizer_problem = None
    if train_state is not None:
        try:
            check_train_state(train_state)
        except ValueError as e:
            train_state, train_state_problem = None, first_line(e, 200)
    if optimizer_meta is not None:
        param_names = [n for n, _ in _meta_model(config).named_parameters()]
        try:
            check_optimizer_meta(optimizer_meta, param_names)
        except ValueError as e:
            optimizer_meta, optimizer_problem = None, first_line(e, 200)
    return _Header(path, file_bytes, data_start, metadata, header, config, tokenizer_dict, train_state,
                   train_state_problem, optimizer_meta, optimizer_problem)


def _read_header(path: str | os.PathLike) -> _Header:
    path = Path(path).expanduser()
    with _open(path) as f:
        before = _identity(f, path)
        header = _validate(path, *_read_raw_header(f, path))
        _check_unchanged(f, path, before)
    return header


def _build_tokenizer(h: _Header) -> Tokenizer:
    try:
        tokenizer = tokenizer_from_dict(h.tokenizer_dict)
    except (TypeError, KeyError, ValueError) as e:
        raise _fail(h.path, f"invalid tokenizer: {printable(first_line(e, 200))}") from None
    if tokenizer.vocab_size > h.config.vocab_size:
        raise _fail(h.path, f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model only "
                            f"{h.config.vocab_size:,}")
    return tokenizer


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds (config, size, tokenizer, training state), without loading weights.

    The file is checked exactly as `load_checkpoint` checks it, except for the tensors' values.
    `train_state_problem` / `optimizer_problem` say why a training or optimizer state is unusable (None
    when it is fine or absent); `train_state` is None then.
    """
    h = _read_header(path)
    tokenizer = _build_tokenizer(h)
    return {
        "path": str(h.path),
        "file_bytes": h.file_bytes,
        "format_version": int(h.metadata["format_version"]),
        "model_config": h.config.to_dict(),
        "num_params": h.config.num_params(),
        "tokenizer": {"type": h.tokenizer_dict.get("type"), "name": tokenizer.name,
                      "vocab_size": tokenizer.vocab_size, "description": tokenizer.describe()},
        "train_state": h.train_state,
        "train_state_problem": h.train_state_problem,
        "has_optimizer_state": h.optimizer_meta is not None,
        "optimizer_problem": h.optimizer_problem,
    }


def read_checkpoint_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer stored in a checkpoint (the file checked as by `read_checkpoint_info`), without weights."""
    return _build_tokenizer(_read_header(path))


def _read_tensors(f, h: _Header) -> dict[str, torch.Tensor]:
    """Every tensor's bytes read into memory of its own (never memory-mapped: a file rewritten under a
    mapping kills the reader with SIGBUS; a short read here is an error message instead)."""
    tensors = {}
    for name, entry in sorted(h.tensors.items(), key=lambda item: item[1]["data_offsets"][0]):
        start, stop = entry["data_offsets"]
        dtype, _ = DTYPES[entry["dtype"]]
        raw = torch.empty(stop - start, dtype=torch.uint8)
        f.seek(h.data_start + start)
        if stop > start and f.readinto(memoryview(raw.numpy())) != stop - start:
            raise _fail(h.path, "the file changed while it was being read (it became shorter)")
        tensors[name] = raw.view(dtype).reshape(entry["shape"])
    return tensors


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint; the model comes back in float32 on `device`, in eval mode."""
    path = Path(path).expanduser()
    with _open(path) as f:
        before = _identity(f, path)
        h = _validate(path, *_read_raw_header(f, path))
        tokenizer = _build_tokenizer(h)
        try:
            tensors = _read_tensors(f, h)
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
        except (MemoryError, RuntimeError) as e:  # RuntimeError: torch's allocator
            raise _fail(path, f"not enough memory to load the weights ({first_line(e, 120)})") from None
        _check_unchanged(f, path, before)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _fail(h.path, f"tensor {name!r} holds NaN or infinite values")

    state = {k: tensors[k].to(torch.float32) for k in _expected_shapes(h.config)}
    if h.config.tie_embeddings:
        state[TIED] = state["tok_emb.weight"]
    model = _meta_model(h.config)
    model.load_state_dict(state, assign=True)
    model.tie_weights()  # re-tie: one tensor for both
    model = model.to(device).eval()

    optimizer_state, problem = None, h.optimizer_problem
    if h.optimizer_meta is not None:
        per_param: dict[str, dict[str, torch.Tensor]] = {}
        for name, t in tensors.items():
            if name.startswith(OPTIMIZER_PREFIX):
                param, _, key = name[len(OPTIMIZER_PREFIX):].rpartition(".")
                per_param.setdefault(param, {})[key] = t.to(torch.float32)
        problem = _optimizer_tensors_problem(per_param)
        if problem is None:
            optimizer_state = {"param_groups": h.optimizer_meta["param_groups"], "state": per_param}
    return Checkpoint(h.config, model, tokenizer, h.train_state, optimizer_state, str(h.path),
                      h.train_state_problem, problem)


def _optimizer_tensors_problem(per_param: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """Why saved AdamW moments cannot be used (None when they can): each parameter needs all three, a
    whole non-negative step count and a non-negative second moment."""
    for name, entries in per_param.items():
        if set(entries) != set(OPTIMIZER_KEYS):
            return f"the optimizer state of {name!r} is incomplete"
        step = float(entries["step"])
        if step < 0 or step > 2**53 or not step.is_integer():
            return f"the optimizer step count of {name!r} is not a whole number of steps"
        if bool((entries["exp_avg_sq"] < 0).any()):
            return f"the optimizer state of {name!r} has a negative second moment"
    return None
