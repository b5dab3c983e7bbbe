"""Open a llama.cpp `.gguf` file as the parts a Hugging Face model folder gives.

A Hugging Face folder holds a `config.json`, a state dict and a `tokenizer.json`. A GGUF file holds the
same model under llama.cpp's names: metadata keys (`llama.block_count`, `tokenizer.ggml.tokens`, ...)
and tensors (`blk.0.attn_q.weight`, ...), often quantized. `read_gguf` turns one into the other, so the
code that builds a model from a Hugging Face folder can build it from a GGUF file unchanged:

    config          a dict shaped like `config.json` (model_type "llama", "qwen2" or "gpt2")
    tensors         the state dict under Hugging Face's names, dequantized once to the asked dtype
    tokenizer_json  a `tokenizers` tokenizer.json rebuilt from the vocabulary in the metadata

What llama.cpp's converter (convert_hf_to_gguf.py) changed is undone here:

  * Llama q/k projections: their rows were permuted so that rotary embedding pairs are interleaved
    (llama.cpp rotates pairs (0,1), (2,3), ...; Hugging Face rotates halves (i, i + d/2)). Undone per head.
    Qwen2 files are not permuted (llama.cpp uses the "neox" rotation for them), so nothing is undone.
  * GPT-2's Conv1D weights were transposed to (out, in); they are transposed back to (in, out).
  * Llama 3 rope scaling became a `rope_freqs.weight` tensor of per-frequency factors; the
    `rope_scaling` dict is recovered from it (and checked by recomputing the factors).
  * A tied output head is either absent (`output.weight` missing) or, for GPT-2, a byte-identical
    copy of the token embedding; both become `tie_word_embeddings: true` with no `lm_head.weight`.

A file is checked before anything big is allocated: the header is walked with every count and length
bounded by the file's size, every tensor's bytes must lie inside the file, the config must be within
sane bounds, and every tensor's shape must be the one the config implies. Every refusal is a
`GGUFError` whose message is one line starting with the file's name.

Tokenizers: `tokenizer.ggml.model` "gpt2" is byte-level BPE (tokens + merges; the pre-tokenizer is
chosen from `tokenizer.ggml.pre`), "llama" is SentencePiece BPE (tokens + scores; merges are rebuilt
from the scores, with byte fallback to the `<0xAB>` tokens and "▁" for spaces). An unknown
`tokenizer.ggml.pre` is refused rather than guessed: a wrong split changes every encoding silently.

One module of about 1,000 lines on purpose: it is the inverse of one program (llama.cpp's converter), and its
parts (the bounded header walk, the metadata reader, the config, the expected tensor shapes, the tokenizer)
share the metadata reader and the file's one-line errors; it is the only module that knows the GGUF format.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["SUPPORTED_PRE_TOKENIZERS", "SUPPORTED_TENSOR_TYPES", "GGUFError", "GGUFModel", "GGUFSummary",
           "read_gguf", "read_gguf_job", "read_gguf_summary"]


class GGUFError(ValueError):
    """A GGUF file that can't be read into a model; the message is one line, starting with the file name."""


# ---------------------------------------------------------------------------------------------------------
# Limits. Real models sit far inside them; a file beyond them is refused before anything is allocated.
MAX_LAYERS = 1000
MAX_HIDDEN = 65536
MAX_VOCAB = 1 << 22
MAX_HEADS = 1024
MAX_FFN = 1 << 20
MAX_CONTEXT = 1 << 26
_MAX_KV = 1 << 20            # metadata entries
_MAX_TENSORS = 1 << 20
_MAX_STRING = 1 << 26        # one metadata string (a chat template is a few KiB)
_MAX_DIMS = 4                # GGML_MAX_DIMS
_MAX_ELEMENTS = 1 << 40

# ggml type id -> (name, elements per block, bytes per block), for the types read here.
_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),
    8: ("Q8_0", 32, 34), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
}
SUPPORTED_TENSOR_TYPES = tuple(name for name, _, _ in _TYPES.values())

# GGUF metadata value types.
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR_SIZE = {_U8: 1, _I8: 1, _U16: 2, _I16: 2, _U32: 4, _I32: 4, _F32: 4, _BOOL: 1,
                _U64: 8, _I64: 8, _F64: 8}
_INT_TYPES = {_U8, _I8, _U16, _I16, _U32, _I32, _U64, _I64}
_FLOAT_TYPES = {_F32, _F64}
_TYPE_NAMES = {_U8: "uint8", _I8: "int8", _U16: "uint16", _I16: "int16", _U32: "uint32", _I32: "int32",
               _F32: "float32", _BOOL: "bool", _STR: "string", _ARR: "array", _U64: "uint64",
               _I64: "int64", _F64: "float64"}

# llama.cpp token types (tokenizer.ggml.token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_ARCHS = {"llama": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}


@dataclass
class GGUFModel:
    """What a GGUF file holds, in the shape a Hugging Face model folder gives it."""

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    tokenizer_json: str
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    add_bos_token: bool = False
    chat_template: str | None = None
    quant_summary: dict[str, float] = field(default_factory=dict)
    architecture: str = ""          # general.architecture as the file states it
    name: str | None = None         # general.name, when the file has one


# ---------------------------------------------------------------------------------------------------------
# The header, walked with every length bounded by the file before gguf.GGUFReader sees it.

@dataclass
class _TensorInfo:
    name: str
    shape: tuple[int, ...]     # torch order (slowest dimension first)
    type_id: int
    offset: int                # from the start of the data section
    nbytes: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class _Scan:
    """A bounds-checked walk over a GGUF header: metadata value types and the tensor table."""

    def __init__(self, buf, label: str):
        self.buf, self.label, self.size, self.pos = buf, label, len(buf), 0

    def fail(self, msg: str):
        raise GGUFError(_line(f"{self.label}: {msg}"))

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            self.fail(f"truncated or corrupt header: {what} at byte {self.pos} runs past the end "
                      f"of the file ({self.size} bytes)")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)

    def string(self, what: str, limit: int = _MAX_STRING) -> str:
        (n,) = self.unpack("<Q", what)
        if n > limit:
            self.fail(f"{what} claims {n} bytes (limit {limit})")
        start = self.take(n, what)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _SCALAR_SIZE:
            self.take(_SCALAR_SIZE[vtype], what)
        elif vtype == _STR:
            (n,) = self.unpack("<Q", what)
            self.take(n, what)
        elif vtype == _ARR:
            if depth > 2:
                self.fail(f"{what} nests arrays too deeply")
            etype, count = self.unpack("<IQ", what)
            if etype not in _TYPE_NAMES:
                self.fail(f"{what} is an array of unknown value type {etype}")
            smallest = _SCALAR_SIZE.get(etype, 8 if etype == _STR else 12)
            if count * smallest > self.size - self.pos:
                self.fail(f"truncated or corrupt header: {what} claims {count} elements, more than the "
                          "rest of the file can hold")
            if etype in _SCALAR_SIZE:
                self.take(count * smallest, what)
            else:
                for _ in range(count):
                    self.skip_value(etype, what, depth + 1)
        else:
            self.fail(f"{what} has unknown value type {vtype}")


def _scan_header(buf, label: str, scalars: dict[str, Any] | None = None) -> tuple[list[_TensorInfo], int]:
    """The tensor table (with byte sizes) and where the data section starts; refuses malformed headers.
    With `scalars`, the metadata's strings and numbers (not its arrays) are put in it by key."""
    s = _Scan(buf, label)
    if s.size < 24 or bytes(buf[:4]) != b"GGUF":
        s.fail("not a GGUF file (no GGUF magic at the start)")
    (version,) = struct.unpack_from("<I", buf, 4)
    if version & 0xFFFF == 0 and version != 0:
        s.fail("big-endian GGUF files are not supported")
    if version not in (2, 3):
        s.fail(f"GGUF version {version} is not supported (2 and 3 are)")
    s.pos = 8
    n_tensors, n_kv = s.unpack("<QQ", "header counts")
    if n_tensors > _MAX_TENSORS or n_kv > _MAX_KV:
        s.fail(f"header claims {n_tensors} tensors and {n_kv} metadata entries, beyond any real model")
    alignment = 32
    seen: set[str] = set()
    for _ in range(n_kv):
        key = s.string("a metadata key", 1 << 16)
        if key in seen:
            s.fail(f"metadata key {key} appears twice")
        seen.add(key)
        (vtype,) = s.unpack("<I", f"metadata {key}")
        if key == "general.alignment":
            if vtype != _U32:
                s.fail("general.alignment must be a uint32")
            (alignment,) = s.unpack("<I", "general.alignment")
            if alignment == 0 or alignment & (alignment - 1) or alignment > 1 << 16:
                s.fail(f"general.alignment {alignment} is not a power of two up to 65536")
        elif scalars is not None and vtype == _STR:
            scalars[key] = s.string(f"metadata {key}")
        elif scalars is not None and vtype in _SCALAR_SIZE and vtype != _BOOL:
            fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[_SCALAR_SIZE[vtype]]
            fmt = fmt.upper() if vtype in (_U8, _U16, _U32, _U64) else fmt
            fmt = {_F32: "f", _F64: "d"}.get(vtype, fmt)
            (scalars[key],) = s.unpack("<" + fmt, f"metadata {key}")
        else:
            s.skip_value(vtype, f"metadata {key}")
    infos: list[_TensorInfo] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = s.string("a tensor name", 1 << 16)
        if name in names:
            s.fail(f"tensor {name} appears twice")
        names.add(name)
        (n_dims,) = s.unpack("<I", f"tensor {name}")
        if not 1 <= n_dims <= _MAX_DIMS:
            s.fail(f"tensor {name} has {n_dims} dimensions (1 to {_MAX_DIMS} allowed)")
        dims = s.unpack(f"<{n_dims}Q", f"tensor {name}")
        type_id, offset = s.unpack("<IQ", f"tensor {name}")
        if any(d == 0 for d in dims) or any(d > _MAX_ELEMENTS for d in dims) \
                or math.prod(dims) > _MAX_ELEMENTS:
            s.fail(f"tensor {name} has absurd dimensions {list(dims)}")
        infos.append(_TensorInfo(name, tuple(int(d) for d in reversed(dims)), int(type_id), int(offset)))
    data_start = (s.pos + alignment - 1) // alignment * alignment
    for t in infos:
        if t.type_id not in _TYPES:
            s.fail(f"tensor {t.name} is stored as {_type_name(t.type_id)}, which is not supported "
                   f"(supported: {', '.join(SUPPORTED_TENSOR_TYPES)})")
        tname, block, block_bytes = _TYPES[t.type_id]
        if t.shape[-1] % block:
            s.fail(f"tensor {t.name} ({tname}) has rows of {t.shape[-1]} values, not a multiple of "
                   f"its block size {block}")
        t.nbytes = t.numel // block * block_bytes
        if t.offset % alignment:
            s.fail(f"tensor {t.name} starts at offset {t.offset}, not aligned to {alignment}")
        end = data_start + t.offset + t.nbytes
        if end > s.size:
            s.fail(f"truncated: tensor {t.name} needs bytes up to {end} but the file has {s.size}")
    return infos, data_start


def _type_name(type_id: int) -> str:
    if type_id in _TYPES:
        return _TYPES[type_id][0]
    try:
        from gguf import GGMLQuantizationType
        return f"{GGMLQuantizationType(type_id).name} (type {type_id})"
    except ValueError:
        return f"unknown ggml type {type_id}"


def _line(msg: str) -> str:
    return " ".join(str(msg).split())


# ---------------------------------------------------------------------------------------------------------
# Typed metadata access.

class _Meta:
    """The metadata of a gguf.GGUFReader, read with the type each key must have."""

    def __init__(self, fields, label: str):
        self.fields, self.label = fields, label

    def fail(self, msg: str):
        raise GGUFError(_line(f"{self.label}: {msg}"))

    def has(self, key: str) -> bool:
        return key in self.fields

    def _field(self, key: str, required: bool):
        f = self.fields.get(key)
        if f is None and required:
            self.fail(f"metadata {key} is missing")
        return f

    def _types(self, f) -> str:
        types = [int(t) for t in f.types]
        if types and types[0] == _ARR:
            return f"array of {_TYPE_NAMES.get(types[-1], '?')}" if len(types) > 1 else "empty array"
        return _TYPE_NAMES.get(types[0], "?") if types else "?"

    def _scalar(self, key: str, allowed: set[int], what: str, required: bool):
        f = self._field(key, required)
        if f is None:
            return None
        if len(f.types) != 1 or int(f.types[0]) not in allowed:
            self.fail(f"metadata {key} should be {what}, found {self._types(f)}")
        return int(f.types[0]), f.parts[f.data[0]][0]

    def get_int(self, key: str, lo: int, hi: int, required: bool = True, default: int | None = None):
        got = self._scalar(key, _INT_TYPES, "an integer", required)
        if got is None:
            return default
        value = int(got[1])
        if not lo <= value <= hi:
            self.fail(f"metadata {key} = {value} is outside [{lo}, {hi}]")
        return value

    def get_float(self, key: str, lo: float, hi: float, required: bool = True, default: float | None = None):
        got = self._scalar(key, _FLOAT_TYPES | _INT_TYPES, "a number", required)
        if got is None:
            return default
        vtype, raw = got
        # float32 values are written back as the shortest decimal that reads as the same float32
        # (1e-05, not 9.999999747378752e-06), as a config.json would have them.
        value = float(str(np.float32(raw))) if vtype == _F32 else float(raw)
        if not (math.isfinite(value) and lo <= value <= hi):
            self.fail(f"metadata {key} = {value} is outside [{lo}, {hi}]")
        return value

    def get_bool(self, key: str, default: bool | None = None):
        got = self._scalar(key, {_BOOL}, "a bool", False)
        return default if got is None else bool(got[1])

    def get_str(self, key: str, required: bool = True, default: str | None = None):
        got = self._scalar(key, {_STR}, "a string", required)
        if got is None:
            return default
        f = self.fields[key]
        try:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"metadata {key} is not valid UTF-8")

    def _array(self, key: str, allowed: set[int], what: str, required: bool):
        f = self._field(key, required)
        if f is None:
            return None
        types = [int(t) for t in f.types]
        if not types or types[0] != _ARR or (len(types) > 1 and (len(types) != 2 or types[1] not in allowed)):
            self.fail(f"metadata {key} should be {what}, found {self._types(f)}")
        return f

    def str_array(self, key: str, required: bool = True) -> list[str] | None:
        f = self._array(key, {_STR}, "an array of strings", required)
        if f is None:
            return None
        try:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        except UnicodeDecodeError:
            self.fail(f"metadata {key} holds a string that is not valid UTF-8")

    def num_array(self, key: str, kinds: set[int], what: str, required: bool = True) -> np.ndarray | None:
        f = self._array(key, kinds, what, required)
        if f is None:
            return None
        if not f.data:
            return np.zeros(0)
        return np.concatenate([np.asarray(f.parts[i]).reshape(-1) for i in f.data])


# ---------------------------------------------------------------------------------------------------------
# Config.

def _llama_config(meta: _Meta, arch: str, infos: dict[str, _TensorInfo], vocab_size: int,
                  rope_freqs: np.ndarray | None) -> dict[str, Any]:
    p = arch + "."
    layers = meta.get_int(p + "block_count", 1, MAX_LAYERS)
    hidden = meta.get_int(p + "embedding_length", 1, MAX_HIDDEN)
    ffn = meta.get_int(p + "feed_forward_length", 1, MAX_FFN)
    heads = meta.get_int(p + "attention.head_count", 1, MAX_HEADS)
    kv_heads = meta.get_int(p + "attention.head_count_kv", 1, heads, required=False, default=heads)
    if heads % kv_heads:
        meta.fail(f"{heads} attention heads do not divide into {kv_heads} key/value heads")
    if meta.get_int(p + "expert_count", 0, 1 << 16, required=False, default=0):
        meta.fail("mixture-of-experts models are not supported")
    head_dim = meta.get_int(p + "attention.key_length", 1, 4096, required=False)
    if head_dim is None:
        if hidden % heads:
            meta.fail(f"embedding length {hidden} is not a multiple of {heads} heads")
        head_dim = hidden // heads
    value_dim = meta.get_int(p + "attention.value_length", 1, 4096, required=False, default=head_dim)
    if value_dim != head_dim:
        meta.fail(f"value head size {value_dim} differs from key head size {head_dim}")
    if head_dim % 2:
        meta.fail(f"head size {head_dim} is odd; rotary embedding needs it even")
    rot = meta.get_int(p + "rope.dimension_count", 1, 4096, required=False, default=head_dim)
    if rot != head_dim:
        meta.fail(f"rotary embedding over {rot} of {head_dim} dimensions (partial rotary) is not supported")
    context = meta.get_int(p + "context_length", 1, MAX_CONTEXT)
    eps = meta.get_float(p + "attention.layer_norm_rms_epsilon", 0.0, 1.0)
    theta = meta.get_float(p + "rope.freq_base", 1e-3, 1e12, required=False, default=10000.0)
    if meta.has(p + "vocab_size"):
        declared = meta.get_int(p + "vocab_size", 1, MAX_VOCAB)
        if declared != vocab_size:
            meta.fail(f"metadata {p}vocab_size = {declared} but the vocabulary has {vocab_size} tokens")

    rope_scaling = _rope_scaling(meta, p, theta, head_dim, rope_freqs)
    biases = {k: f"blk.0.attn_{k}.bias" in infos for k in ("q", "k", "v", "output")}
    if arch == "qwen2":
        if not (biases["q"] and biases["k"] and biases["v"]) or biases["output"]:
            meta.fail("a qwen2 file needs q/k/v projection biases and no output projection bias")
        attention_bias = True
    else:
        if any(biases.values()) and not all(biases.values()):
            meta.fail("biases on only some attention projections cannot be represented as a Llama "
                      f"(found {', '.join(k for k, v in biases.items() if v)})")
        attention_bias = all(biases.values())
    model_type = "qwen2" if arch == "qwen2" else "llama"
    config: dict[str, Any] = {
        "model_type": model_type,
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "max_position_embeddings": context, "rms_norm_eps": eps, "rope_theta": theta,
        "rope_scaling": rope_scaling, "vocab_size": vocab_size, "hidden_act": "silu",
        "attention_bias": attention_bias, "mlp_bias": False,
    }
    if arch == "qwen2":
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=layers)
    return config


def _rope_scaling(meta: _Meta, p: str, theta: float, head_dim: int,
                  rope_freqs: np.ndarray | None) -> dict[str, Any] | None:
    kind = meta.get_str(p + "rope.scaling.type", required=False)
    factor = meta.get_float(p + "rope.scaling.factor", 0.0, 1e6, required=False)
    legacy = meta.get_float(p + "rope.scale_linear", 0.0, 1e6, required=False)
    if kind is None and legacy is not None:
        kind, factor = "linear", legacy
    scaling = None
    if kind in (None, "none"):
        pass
    elif kind == "linear":
        if factor is None or factor <= 0:
            meta.fail(f"metadata {p}rope.scaling.factor is missing or not positive for linear rope scaling")
        if factor != 1.0:
            scaling = {"rope_type": "linear", "factor": factor}
    elif kind == "yarn":
        meta.fail("YaRN rope scaling is not supported")
    else:
        meta.fail(f"rope scaling type {kind!r} is not supported (none, linear, or Llama 3's rope_freqs)")
    if rope_freqs is not None:
        if scaling is not None:
            meta.fail("the file has both linear rope scaling and a rope_freqs tensor")
        scaling = _llama3_scaling(meta, rope_freqs, theta, head_dim)
    return scaling


def _llama3_factors(theta: float, head_dim: int, factor: float, low: float, high: float, old: float):
    """Per-frequency divisors, as convert_hf_to_gguf computes Llama 3's rope_freqs."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    out = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old / high, 1.0, out)
    return np.where(wavelen > old / low, factor, out), wavelen


def _llama3_scaling(meta: _Meta, f: np.ndarray, theta: float, head_dim: int) -> dict[str, Any] | None:
    """Llama 3 `rope_scaling` from the rope_freqs tensor, checked by recomputing the tensor from it.

    The tensor fixes the frequencies, not the four numbers: only the ratios old_ctx / (high - low) and
    low / (high - low) show. Llama 3.x's own values (low 1, high 4, old context 8192) are tried first;
    otherwise low_freq_factor is taken as 1 and the other two are fitted, which gives the same frequencies.
    """
    f = f.astype(np.float64)
    if not np.all(np.isfinite(f)) or f.min() <= 0:
        meta.fail("rope_freqs.weight holds non-positive or non-finite factors")
    if np.allclose(f, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(str(np.float32(f.max())))
    candidates = [(1.0, 4.0, 8192.0)]
    _, wavelen = _llama3_factors(theta, head_dim, factor, 1.0, 4.0, 8192.0)
    mid = (f > 1 + 1e-4) & (f < factor * (1 - 1e-4))
    if mid.sum() >= 2 and factor > 1:
        s = (1 / f[mid] - 1 / factor) / (1 - 1 / factor)
        a, b = np.polyfit(1 / wavelen[mid], s, 1)
        if b < 0 and a > 0:
            high = 1 - 1 / b
            candidates.append((1.0, float(str(np.float32(high))), float(round(-a / b))))
    for low, high, old in candidates:
        got, _ = _llama3_factors(theta, head_dim, factor, low, high, old)
        if np.allclose(got, f, rtol=1e-4, atol=1e-6):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": int(old)}
    meta.fail("rope_freqs.weight does not match Llama 3 rope scaling; cannot express it as a rope_scaling")


def _gpt2_config(meta: _Meta, infos: dict[str, _TensorInfo], vocab_size: int) -> dict[str, Any]:
    p = "gpt2."
    layers = meta.get_int(p + "block_count", 1, MAX_LAYERS)
    n_embd = meta.get_int(p + "embedding_length", 1, MAX_HIDDEN)
    heads = meta.get_int(p + "attention.head_count", 1, MAX_HEADS)
    if n_embd % heads:
        meta.fail(f"embedding length {n_embd} is not a multiple of {heads} heads")
    ffn = meta.get_int(p + "feed_forward_length", 1, MAX_FFN, required=False, default=4 * n_embd)
    context = meta.get_int(p + "context_length", 1, MAX_CONTEXT)
    eps = meta.get_float(p + "attention.layer_norm_epsilon", 0.0, 1.0)
    pos = infos.get("position_embd.weight")
    n_positions = pos.shape[0] if pos is not None and len(pos.shape) == 2 else context
    if n_positions > MAX_CONTEXT:
        meta.fail(f"position embedding has {n_positions} rows")
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_embd": n_embd, "n_layer": layers, "n_head": heads, "n_positions": n_positions, "n_ctx": context,
        "n_inner": None if ffn == 4 * n_embd else ffn, "vocab_size": vocab_size,
        "layer_norm_epsilon": eps, "activation_function": "gelu_new",
    }


# ---------------------------------------------------------------------------------------------------------
# Tensor names and shapes.

_LLAMA_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias", "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GPT2_LAYER = {
    "attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight", "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight", "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight", "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight", "ffn_down.bias": "mlp.c_proj.bias",
}
# GPT-2 weights stored transposed by the converter (HF's Conv1D keeps them (in, out)).
_GPT2_TRANSPOSED = ("attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight")


def _expected_llama(c: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """GGUF name -> (HF name, GGUF shape in torch order) for every tensor a file must hold."""
    h, i, v, d = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    shapes = {"attn_norm.weight": (h,), "ffn_norm.weight": (h,), "attn_q.weight": (q, h),
              "attn_k.weight": (kv, h), "attn_v.weight": (kv, h), "attn_output.weight": (h, q),
              "ffn_gate.weight": (i, h), "ffn_up.weight": (i, h), "ffn_down.weight": (h, i)}
    if c["attention_bias"]:
        shapes.update({"attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,)})
        if c["model_type"] == "llama":
            shapes["attn_output.bias"] = (h,)
    out = {"token_embd.weight": ("model.embed_tokens.weight", (v, h)),
           "output_norm.weight": ("model.norm.weight", (h,))}
    for layer in range(c["num_hidden_layers"]):
        for g, shape in shapes.items():
            out[f"blk.{layer}.{g}"] = (f"model.layers.{layer}.{_LLAMA_LAYER[g]}", shape)
    return out


def _expected_gpt2(c: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    e, v, f = c["n_embd"], c["vocab_size"], c["n_inner"] or 4 * c["n_embd"]
    shapes = {"attn_norm.weight": (e,), "attn_norm.bias": (e,), "attn_qkv.weight": (3 * e, e),
              "attn_qkv.bias": (3 * e,), "attn_output.weight": (e, e), "attn_output.bias": (e,),
              "ffn_norm.weight": (e,), "ffn_norm.bias": (e,), "ffn_up.weight": (f, e), "ffn_up.bias": (f,),
              "ffn_down.weight": (e, f), "ffn_down.bias": (e,)}
    out = {"token_embd.weight": ("transformer.wte.weight", (v, e)),
           "position_embd.weight": ("transformer.wpe.weight", (c["n_positions"], e)),
           "output_norm.weight": ("transformer.ln_f.weight", (e,)),
           "output_norm.bias": ("transformer.ln_f.bias", (e,))}
    for layer in range(c["n_layer"]):
        for g, shape in shapes.items():
            out[f"blk.{layer}.{g}"] = (f"transformer.h.{layer}.{_GPT2_LAYER[g]}", shape)
    return out


def _same_bytes(a, b) -> bool:
    """Whether two memory-mapped tensors hold the same bytes, compared a slice at a time."""
    a = np.asarray(a).reshape(-1).view(np.uint8)
    b = np.asarray(b).reshape(-1).view(np.uint8)
    if a.size != b.size:
        return False
    step = 1 << 24
    return all(np.array_equal(a[i:i + step], b[i:i + step]) for i in range(0, a.size, step))


def _unpermute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo convert_hf_to_gguf's q/k row permutation (interleaved rotary pairs back to halves), per head."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()


def _to_torch(tensor, type_id: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """One tensor out of the memory map, dequantized and in `dtype`; no numpy temporaries outlive it."""
    data = tensor.data
    if type_id in (0, 1):   # F32 / F16: one copy out of the read-only map, then the cast
        out = torch.from_numpy(np.array(data, copy=True)).to(dtype)
    elif type_id == 30:     # BF16: numpy has no bfloat16; reinterpret the bytes
        raw = np.array(data, copy=True).view(np.int16)
        out = torch.from_numpy(raw).view(torch.bfloat16).to(dtype)
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
        out = torch.from_numpy(dequantize(data, GGMLQuantizationType(type_id))).to(dtype)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# Tokenizers.

_LLAMA3_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                 r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
_QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# tokenizer.ggml.pre -> how the text is split before BPE (as llama.cpp's llama-vocab.cpp does it).
# "default" is read as GPT-2's split, as transformers does (llama.cpp's own fallback differs slightly).
_PRE_STYLES = {
    "default": "gpt2", "gpt-2": "gpt2", "gpt2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "llama-bpe": "llama3", "llama3": "llama3", "llama-v3": "llama3", "dbrx": "llama3", "smaug-bpe": "llama3",
    "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2",
    "smollm": "digits", "starcoder": "digits", "refact": "digits",
}
SUPPORTED_PRE_TOKENIZERS = tuple(sorted(_PRE_STYLES))


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass
class _Vocab:
    model: str
    tokens: list[str]
    types: list[int]
    scores: np.ndarray | None
    merges: list[str] | None
    pre: str
    bos: int | None
    eos: int | None
    eot: int | None
    unk: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool


def _read_vocab(meta: _Meta) -> _Vocab:
    model = meta.get_str("tokenizer.ggml.model", required=False)
    if model is None:
        meta.fail("the file has no tokenizer (tokenizer.ggml.model is missing)")
    if model not in ("gpt2", "llama"):
        meta.fail(f"tokenizer model {model!r} cannot be rebuilt (gpt2 byte-level BPE and llama "
                  "SentencePiece are supported)")
    tokens = meta.str_array("tokenizer.ggml.tokens")
    n = len(tokens)
    if not 1 <= n <= MAX_VOCAB:
        meta.fail(f"the vocabulary has {n} tokens (1 to {MAX_VOCAB} allowed)")
    types = meta.num_array("tokenizer.ggml.token_type", _INT_TYPES, "an array of integers", required=False)
    if types is None:
        types = np.full(n, _NORMAL)
    if len(types) != n:
        meta.fail(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    if types.size and (types.min() < 0 or types.max() > 6):
        meta.fail("tokenizer.ggml.token_type holds values outside 0..6")
    scores = meta.num_array("tokenizer.ggml.scores", _FLOAT_TYPES, "an array of floats",
                            required=(model == "llama"))
    if scores is not None:
        if len(scores) != n:
            meta.fail(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
        if not np.all(np.isfinite(scores)):
            meta.fail("tokenizer.ggml.scores holds non-finite values")
    merges = meta.str_array("tokenizer.ggml.merges", required=(model == "gpt2"))
    pre = meta.get_str("tokenizer.ggml.pre", required=False, default="default")
    if model == "gpt2" and pre not in _PRE_STYLES:
        meta.fail(f"pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported "
                  f"(supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)})")

    def token_id(key: str, default: int | None = None):
        value = meta.get_int(f"tokenizer.ggml.{key}", 0, (1 << 32) - 1, required=False)
        if value is None:
            return default if default is not None and default < n else None
        if value >= n:
            meta.fail(f"metadata tokenizer.ggml.{key} = {value} is not a token id (vocabulary of {n})")
        return value

    spm = model == "llama"
    # llama.cpp's defaults for a SentencePiece vocabulary that does not name its special tokens.
    bos = token_id("bos_token_id", 1 if spm else None)
    eos = token_id("eos_token_id", 2 if spm else None)
    unk = token_id("unknown_token_id", 0 if spm else None)
    eot = token_id("eot_token_id")
    for key in ("padding_token_id", "eom_token_id", "sep_token_id", "cls_token_id", "mask_token_id"):
        token_id(key)
    # llama.cpp adds BOS by default for SentencePiece and for Llama 3's BPE; the file's flag wins.
    add_bos = meta.get_bool("tokenizer.ggml.add_bos_token", default=spm or _PRE_STYLES.get(pre) == "llama3")
    add_eos = meta.get_bool("tokenizer.ggml.add_eos_token", default=False)
    add_space_prefix = meta.get_bool("tokenizer.ggml.add_space_prefix", default=True)
    if add_bos and bos is None:
        meta.fail("tokenizer.ggml.add_bos_token is set but there is no BOS token id")
    if add_eos and eos is None:
        meta.fail("tokenizer.ggml.add_eos_token is set but there is no EOS token id")
    return _Vocab(model, tokens, [int(t) for t in types], scores, merges, pre, bos, eos, eot, unk,
                  add_bos, add_eos, add_space_prefix)


def _spm_merges(tokens: list[str], scores: np.ndarray) -> list[tuple[str, str]]:
    """BPE merges for a SentencePiece vocabulary: every split of a token into two tokens, best score first.

    SentencePiece BPE merges, at each step, the adjacent pair whose join has the highest score; a
    `tokenizers` BPE model merges the pair of lowest rank, so ranking the merges by the joined token's
    score (ties: lower token id, then the split further left) encodes the same way.
    """
    index = {t: i for i, t in enumerate(tokens)}   # a repeated token: the last id wins, as in llama.cpp
    found = []
    for token, tid in index.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in index and right in index:
                found.append((-float(scores[tid]), tid, cut, left, right))
    found.sort(key=lambda m: m[:3])
    return [(left, right) for *_, left, right in found]


def _build_tokenizer(vocab: _Vocab, label: str) -> str:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    def fail(msg: str):
        raise GGUFError(_line(f"{label}: cannot rebuild the tokenizer: {msg}"))

    tokens, types = vocab.tokens, vocab.types
    if vocab.model == "gpt2":
        alphabet = _byte_alphabet()
        spelled = set(alphabet.values())
        vocab_map: dict[str, int] = {}
        for i, (tok, ttype) in enumerate(zip(tokens, types)):
            if ttype not in (_CONTROL, _USER_DEFINED) and not set(tok) <= spelled:
                # A normal token written as plain text (a converter slip): spell it in the byte alphabet.
                tok = "".join(alphabet[b] for b in tok.encode("utf-8"))
            vocab_map[tok] = i
        merges = []
        for k, m in enumerate(vocab.merges or []):
            cut = m.find(" ", 1)
            left, right = (m[:cut], m[cut + 1:]) if cut > 0 else (None, None)
            if left is None or left not in vocab_map or right not in vocab_map \
                    or left + right not in vocab_map:
                fail(f"merge #{k} {m[:40]!r} does not join two tokens of the vocabulary into a third")
            merges.append((left, right))
        style = _PRE_STYLES[vocab.pre]
        # Llama 3 takes a whole pre-token that is in the vocabulary as is (llama.cpp and its tokenizer.json).
        extra = {"ignore_merges": True} if style == "llama3" else {}
        try:
            model = models.BPE(vocab_map, merges, fuse_unk=False, byte_fallback=False, **extra)
        except Exception as e:  # noqa: BLE001 - any failure of the library becomes one line
            fail(str(e))
        tok = Tokenizer(model)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        if style == "gpt2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        elif style == "digits":
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        else:
            split = _LLAMA3_SPLIT if style == "llama3" else _QWEN2_SPLIT
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False), byte_level])
        if style == "qwen2":
            # Qwen2's own tokenizer.json normalizes to NFC (llama.cpp and transformers' GGUF reader don't).
            tok.normalizer = normalizers.NFC()
        tok.decoder = decoders.ByteLevel()
    else:
        scores = vocab.scores
        vocab_map = {t: i for i, t in enumerate(tokens)}
        unk = tokens[vocab.unk] if vocab.unk is not None else None
        try:
            model = models.BPE(vocab_map, _spm_merges(tokens, scores), unk_token=unk, fuse_unk=True,
                               byte_fallback=True)
        except Exception as e:  # noqa: BLE001 - any failure of the library becomes one line
            fail(str(e))
        tok = Tokenizer(model)
        scheme = "first" if vocab.add_space_prefix else "never"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
        steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
        if vocab.add_space_prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
        tok.decoder = decoders.Sequence(steps)

    # Control tokens and <unk> are special (matched whole, skipped when decoding with
    # skip_special_tokens); user-defined ones are matched whole but are ordinary text.
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty in (_CONTROL, _UNKNOWN) and t]
    plain = [AddedToken(t, special=False, normalized=False)
             for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t]
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)
    if vocab.add_bos or vocab.add_eos:
        # BOS/EOS added around every encoding, as a Hugging Face tokenizer.json does it. A template names
        # its special tokens; a name that would not parse in a template gets a stand-in.
        def entry(alias: str, tid: int) -> dict[str, Any]:
            text = tokens[tid]
            simple = text and not any(ch.isspace() for ch in text) and ":" not in text and "$" not in text
            return {"id": text if simple else alias, "ids": [tid], "tokens": [text]}
        ends = [entry("BOS", vocab.bos)] if vocab.add_bos else []
        tails = [entry("EOS", vocab.eos)] if vocab.add_eos else []
        single = " ".join([e["id"] for e in ends] + ["$A"] + [e["id"] for e in tails])
        pair = single + " " + " ".join([e["id"] + ":1" for e in ends] + ["$B:1"] + [e["id"] + ":1" for e in tails])
        specials = {e["id"]: e for e in ends + tails}
        try:
            tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                               special_tokens=list(specials.values()))
        except Exception as e:  # noqa: BLE001 - any failure of the library becomes one line
            fail(str(e))
    elif vocab.model == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens) and len(set(tokens)) == len(tokens):
        fail(f"it has {tok.get_vocab_size(with_added_tokens=True)} tokens, the file {len(tokens)}")
    return tok.to_str()


# ---------------------------------------------------------------------------------------------------------

def read_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32, *, tensors: bool = True) -> GGUFModel:
    """Read a GGUF file into a Hugging Face-shaped config, state dict and tokenizer.json.

    Supported: architectures llama (also Mistral, which llama.cpp writes as llama), qwen2 and gpt2;
    tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K, Q6_K. Every tensor is dequantized
    once, straight to `dtype`. Anything else is refused with a one-line `GGUFError`. tensors=False checks
    everything but reads no tensor (for the tokenizer and the config alone).
    """
    job = read_gguf_job(path, dtype, tensors=tensors)
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def read_gguf_job(path: str | os.PathLike, dtype: torch.dtype = torch.float32, *, tensors: bool = True
                  ) -> Generator[tuple[int, int], None, GGUFModel]:
    """read_gguf as a job: yields (tensors done, tensors in all) after each tensor is dequantized, returns the
    GGUFModel. Closing it between tensors stops the reading."""
    path = os.fspath(path)
    label = os.path.basename(path) or path
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise GGUFError(f"{label}: dtype must be a torch floating-point dtype, got {dtype!r}")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if size == 0:
                raise GGUFError(f"{label}: the file is empty, not a GGUF file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                infos_list, _ = _scan_header(buf, label)
    except OSError as e:
        raise GGUFError(_line(f"{label}: cannot read the file: {e.strerror or e}")) from None
    infos = {t.name: t for t in infos_list}

    from gguf import GGUFReader
    try:
        reader = GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the header was checked above; a last line of defence
        raise GGUFError(_line(f"{label}: gguf could not read the file: {e}")) from None
    meta = _Meta(reader.fields, label)
    arch = meta.get_str("general.architecture")
    if arch not in _ARCHS:
        meta.fail(f"architecture {arch!r} is not supported (supported: {', '.join(_ARCHS)})")
    name = meta.get_str("general.name", required=False)
    by_name = {t.name: t for t in reader.tensors}

    vocab = _read_vocab(meta)
    vocab_size = len(vocab.tokens)

    # Llama 3's rope scaling travels as a small F32 tensor; read it (checked) before the config.
    rope_freqs = None
    if arch != "gpt2" and "rope_freqs.weight" in infos:
        rf = infos["rope_freqs.weight"]
        if rf.type_id != 0 or len(rf.shape) != 1 or rf.shape[0] > 4096:
            meta.fail(f"rope_freqs.weight should be a small F32 vector, found {_type_name(rf.type_id)} "
                      f"{list(rf.shape)}")
        rope_freqs = np.array(by_name["rope_freqs.weight"].data, dtype=np.float64).reshape(-1)

    if arch == "gpt2":
        config = _gpt2_config(meta, infos, vocab_size)
        expected = _expected_gpt2(config)
    else:
        config = _llama_config(meta, arch, infos, vocab_size, rope_freqs)
        expected = _expected_llama(config)
        if rope_freqs is not None and rope_freqs.shape[0] != config["head_dim"] // 2:
            meta.fail(f"rope_freqs.weight has {rope_freqs.shape[0]} factors for head size {config['head_dim']}")

    # The output head: absent, or a byte-identical copy of the token embedding, means tied.
    tied = True
    out = infos.get("output.weight")
    if out is not None:
        embd = infos.get("token_embd.weight")
        same = (embd is not None and embd.type_id == out.type_id and embd.shape == out.shape
                and _same_bytes(by_name["token_embd.weight"].data, by_name["output.weight"].data))
        if not same:
            tied = False
            hidden = config.get("hidden_size", config.get("n_embd"))
            expected["output.weight"] = ("lm_head.weight", (vocab_size, hidden))
    config["tie_word_embeddings"] = tied
    config["bos_token_id"], config["eos_token_id"] = vocab.bos, vocab.eos

    # Every tensor where the config says, with the shape it says, before a byte is dequantized.
    allowed_extra = {"rope_freqs.weight"} | ({"output.weight"} if tied else set())
    for t in infos_list:
        if t.name not in expected and t.name not in allowed_extra:
            meta.fail(f"unexpected tensor {t.name} for a {config['model_type']} model")
    for gname, (_, shape) in expected.items():
        t = infos.get(gname)
        if t is None:
            meta.fail(f"tensor {gname} is missing")
        if t.shape != shape:
            meta.fail(f"tensor {gname} has shape {list(t.shape)}, the config implies {list(shape)}")

    tokenizer_json = _build_tokenizer(vocab, label)
    chat_template = meta.get_str("tokenizer.chat_template", required=False)

    counts: dict[str, int] = {}
    for gname in expected:
        t = infos[gname]
        counts[_TYPES[t.type_id][0]] = counts.get(_TYPES[t.type_id][0], 0) + t.numel
    total = sum(counts.values())
    quant_summary = {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}

    out_tensors: dict[str, torch.Tensor] = {}
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    for done, (gname, (hf_name, shape)) in enumerate(expected.items() if tensors else ()):
        t = infos[gname]
        try:
            w = _to_torch(by_name[gname], t.type_id, shape, dtype)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the library becomes one line
            meta.fail(f"cannot dequantize tensor {gname} ({_TYPES[t.type_id][0]}): {e}")
        if arch == "llama" and (".attn_q." in gname or ".attn_k." in gname):
            w = _unpermute_rows(w, heads if ".attn_q." in gname else kv_heads)
        elif arch == "gpt2" and gname.endswith(_GPT2_TRANSPOSED):
            w = w.t().contiguous()
        out_tensors[hf_name] = w
        del w
        yield done + 1, len(expected)
    return GGUFModel(config=config, tensors=out_tensors, tokenizer_json=tokenizer_json, bos_id=vocab.bos,
                     eos_id=vocab.eos, eot_id=vocab.eot, add_bos_token=vocab.add_bos,
                     chat_template=chat_template, quant_summary=quant_summary, architecture=arch, name=name)


# ---------------------------------------------------------------------------------------------------------
# A quick look, for listings: the header only, no tensor read, no tokenizer built.

@dataclass(frozen=True)
class GGUFSummary:
    """What a GGUF file's header says, read without touching its tensors."""

    architecture: str  # general.architecture ("llama", "qwen2", "gpt2", or one we can't open)
    name: str | None  # general.name
    n_params: int  # elements of the file's parameter tensors (GPT-2's duplicated head counted once)
    quant_summary: dict[str, float]  # tensor type -> share of the elements, largest first
    context_length: int | None
    file_bytes: int
    supported: bool  # an architecture read_gguf can open


def read_gguf_summary(path: str | os.PathLike) -> GGUFSummary:
    """The header of a GGUF file (bounded walk, as read_gguf's); GGUFError for a file that isn't one."""
    path = os.fspath(path)
    label = os.path.basename(path) or path
    scalars: dict[str, Any] = {}
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise GGUFError(f"{label}: the file is empty, not a GGUF file")
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            infos, _ = _scan_header(buf, label, scalars)
    except OSError as e:
        raise GGUFError(_line(f"{label}: cannot read the file: {e.strerror or e}")) from None
    arch = scalars.get("general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(f"{label}: metadata general.architecture is missing")
    counts: dict[str, int] = {}
    for t in infos:
        # Not parameters: Llama 3's rope factors, and the copy of the tied head llama.cpp writes for GPT-2.
        if t.name == "rope_freqs.weight" or (arch == "gpt2" and t.name == "output.weight"):
            continue
        kind = _TYPES[t.type_id][0]
        counts[kind] = counts.get(kind, 0) + t.numel
    total = sum(counts.values()) or 1
    context = scalars.get(f"{arch}.context_length")
    name = scalars.get("general.name")
    return GGUFSummary(
        architecture=arch, name=name if isinstance(name, str) else None, n_params=sum(counts.values()),
        quant_summary={k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
        context_length=context if isinstance(context, int) else None, file_bytes=size, supported=arch in _ARCHS)
