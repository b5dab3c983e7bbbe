"""Hugging Face model folders into our GPT, exactly: the GPT-2 family (gpt2, distilgpt2, gpt2-medium/large/xl)
and the llama family (model_type llama, qwen2, mistral: engine/hf_llama.py reads their config and names).

A Hugging Face folder holds `config.json`, the weights (`model.safetensors`, or shards listed by
`model.safetensors.index.json`), and a tokenizer: `tokenizer.json` (+ tokenizer_config.json,
chat_template.jinja, generation_config.json) or GPT-2's `vocab.json` + `merges.txt`.
GPT-2's tensors map one to one onto ours:

    wte / wpe                 -> tok_emb / pos_emb
    h.N.ln_1, h.N.ln_2        -> blocks.N.ln1, blocks.N.ln2
    h.N.attn.c_attn           -> blocks.N.attn.qkv       (Conv1D: weight stored (in, out), so transposed)
    h.N.attn.c_proj           -> blocks.N.attn.out_proj  (Conv1D, transposed)
    h.N.mlp.c_fc / c_proj     -> blocks.N.mlp.fc / proj  (Conv1D, transposed)
    ln_f                      -> ln_f
    lm_head                   -> head (tied to tok_emb, as GPT-2)

Names may carry a `transformer.` prefix (a `GPT2LMHeadModel` state dict) or not (the hub's files).
Only what our model can represent exactly is accepted; anything else is refused with one clear line.

Opening a folder (`load_hf_folder_job`) never copies the weights when it can avoid it: safetensors files are
memory-mapped (copy-on-write: training changes pages of our process, never the file), the model is built on the
meta device and takes the mapped tensors as its parameters, and Conv1D weights stay transposed *views* of the
file's (in, out) matrices (nn.Linear and the inference forward accept them; the one-row decoding layout is that
very (in, out) matrix). Only a change of number format (e.g. a bf16 file opened in fp32) makes a new copy.
Everything is checked before any tensor is read: model_type, config bounds (those of checkpoints:
engine.config.ModelConfig), every tensor's name, shape and dtype against the config.

More model families plug in through `FAMILIES` (model_type -> how to read its config and name its tensors).
An embedding table larger than the tokenizer's vocabulary is accepted (Qwen's is padded to a round size).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import ModelConfig
from engine.events import ProgressEvent
from engine.files import read_regular
from engine.hf_llama import TITLES as LLAMA_TITLES
from engine.hf_llama import llama_config, llama_names
from engine.model import GPT
from engine.tokenizers import Tokenizer, load_hf_tokenizer, tokenizer_from_hf_files
from engine.validate import parse_json

# Activations that are the tanh-approximated GELU our MLP uses (gelu_fast is the same formula).
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
# Non-parameter buffers some transformers versions put in the state dict (the causal mask).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
MAX_JSON_BYTES = 16 * 1024 * 1024
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
DTYPE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class HFImportError(ValueError):
    """A Hugging Face folder or state dict that can't become our GPT; the message is for the user."""


# ---------------------------------------------------------------- config.json

def _int_field(config_json: Mapping[str, Any], *names: str) -> int:
    """The first of `names` present in config.json, as a whole number (never a silent float truncation)."""
    for name in names:
        if name in config_json and config_json[name] is not None:
            value = config_json[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise HFImportError(f"config.json: {name} must be a whole number, got {str(value)[:40]!r}")
            return value
    raise HFImportError(f"config.json lacks {names[0]!r}")


def _gpt2_config(config_json: Mapping[str, Any]) -> ModelConfig:
    """Our ModelConfig from a GPT-2 family `config.json`; refuses options our model cannot reproduce."""
    n_embd = _int_field(config_json, "n_embd")
    n_layer = _int_field(config_json, "n_layer")
    n_head = _int_field(config_json, "n_head")
    n_positions = _int_field(config_json, "n_positions", "n_ctx")
    vocab_size = _int_field(config_json, "vocab_size")

    def refuse(what: str) -> None:
        raise HFImportError(f"cannot import this GPT-2: {what} (our model can't represent it exactly)")

    activation = config_json.get("activation_function", "gelu_new")
    if activation not in _TANH_GELUS:
        refuse(f"activation_function is {activation!r}, ours is the tanh GELU ('gelu_new')")
    eps = config_json.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or abs(eps - 1e-5) > 1e-12:
        refuse(f"layer_norm_epsilon is {eps}, ours is 1e-5")
    n_inner = config_json.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        refuse(f"n_inner is {n_inner}, ours is 4 x n_embd = {4 * n_embd}")
    if not config_json.get("scale_attn_weights", True):
        refuse("scale_attn_weights is false")
    if config_json.get("scale_attn_by_inverse_layer_idx", False):
        refuse("scale_attn_by_inverse_layer_idx is true")
    if config_json.get("add_cross_attention", False):
        refuse("it has cross-attention")
    if not config_json.get("tie_word_embeddings", True):
        refuse("its output head is not tied to the token embeddings")
    # (reorder_and_upcast_attn only changes the order of fp32 operations: the same model, accepted.)
    # GPT-2 has three dropout rates, all 0.1 in every released model; ours has one (used for all three).
    drop = config_json.get("resid_pdrop", 0.1)
    if not isinstance(drop, (int, float)) or isinstance(drop, bool):
        refuse(f"resid_pdrop is {drop!r}")
    try:
        return ModelConfig(vocab_size=vocab_size, context_length=n_positions, emb_dim=n_embd,
                           n_heads=n_head, n_layers=n_layer, drop_rate=float(drop), qkv_bias=True)
    except ValueError as e:
        raise HFImportError(f"config.json describes a model we can't build: {e}") from None


def _gpt2_names(config: ModelConfig) -> list[tuple[str, str, bool]]:
    """(hf name, our name, transpose) for every tensor of a GPT-2."""
    pairs = [("wte.weight", "tok_emb.weight", False), ("wpe.weight", "pos_emb.weight", False),
             ("ln_f.weight", "ln_f.weight", False), ("ln_f.bias", "ln_f.bias", False)]
    for i in range(config.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for hf, ours in (("ln_1", "ln1"), ("ln_2", "ln2")):
            pairs += [(h + hf + ".weight", b + ours + ".weight", False), (h + hf + ".bias", b + ours + ".bias", False)]
        for hf, ours in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.out_proj"),
                         ("mlp.c_fc", "mlp.fc"), ("mlp.c_proj", "mlp.proj")):
            # Conv1D keeps its weight as (in, out); nn.Linear as (out, in).
            pairs += [(h + hf + ".weight", b + ours + ".weight", True), (h + hf + ".bias", b + ours + ".bias", False)]
    return pairs


def _gpt2_hf_name(name: str) -> str | None:
    """A hub tensor name without its `transformer.` prefix; None for buffers that are not weights."""
    if name.endswith(_IGNORED_SUFFIXES):
        return None
    return name.removeprefix("transformer.")


@dataclass(frozen=True)
class Family:
    """How one Hugging Face model_type becomes our model."""

    title: str  # for people: "GPT-2"
    config: Callable[[Mapping[str, Any]], ModelConfig]
    names: Callable[[ModelConfig], list[tuple[str, str, bool]]]  # (hf name, our name, transpose)
    hf_name: Callable[[str], str | None]  # a file's tensor name as `names` spells it (None: skip it)
    tied: tuple[str, str]  # (hf head name, hf embedding name): the head a tied model may still store


def _llama_family_config(config_json: Mapping[str, Any]) -> ModelConfig:
    try:
        return llama_config(config_json)
    except ValueError as e:  # engine.hf_llama speaks plain ValueErrors; ModelConfig's bounds are ValueErrors too
        message = str(e)
        if not message.startswith("config.json"):
            message = f"config.json describes a model we can't build: {message}"
        raise HFImportError(message) from None


def _llama_hf_name(name: str) -> str | None:
    # Old checkpoints carry each layer's rotary frequencies as a buffer; ours are computed from the config.
    return None if name.endswith("rotary_emb.inv_freq") else name


FAMILIES: dict[str, Family] = {
    # gpt2, distilgpt2, gpt2-medium, gpt2-large and gpt2-xl all say model_type "gpt2".
    "gpt2": Family("GPT-2", _gpt2_config, _gpt2_names, _gpt2_hf_name, ("lm_head.weight", "wte.weight")),
    **{model_type: Family(title, _llama_family_config, llama_names, _llama_hf_name,
                          ("lm_head.weight", "model.embed_tokens.weight"))
       for model_type, title in LLAMA_TITLES.items()},
}


def family_of(config_json: Mapping[str, Any]) -> Family:
    """The Family of a config.json; HFImportError naming the supported ones otherwise."""
    if not isinstance(config_json, Mapping):
        raise HFImportError("config.json must be a JSON object")
    model_type = config_json.get("model_type", "gpt2")  # the oldest GPT-2 configs have none
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise HFImportError(f"config.json: unsupported model_type {str(model_type)[:60]!r} "
                            f"(supported: {', '.join(sorted(FAMILIES))})")
    return family


def config_from_hf(config_json: Mapping[str, Any]) -> ModelConfig:
    """Our ModelConfig from a Hugging Face `config.json`; refuses what our model cannot reproduce."""
    return family_of(config_json).config(config_json)


# ---------------------------------------------------------------- tensors -> our GPT

def _build(family: Family, config: ModelConfig, tensors: Mapping[str, Any], *, dtype: torch.dtype | None,
           views: bool, label: str = "the weights") -> Generator[ProgressEvent, None, GPT]:
    """Our GPT from `tensors` (hf names as `family.hf_name` gives them -> tensors), checked against the config
    before anything is read. dtype None keeps each tensor's own; views keeps transposed Conv1D weights as views
    (no copy) instead of contiguous copies. Yields a ProgressEvent per tensor, returns the model (eval mode)."""
    by_name: dict[str, str] = {}
    for name in tensors:
        hf = family.hf_name(name)
        if hf is not None:
            by_name[hf] = name
    with torch.device("meta"):
        model = GPT(config)
    expected = model.state_dict()
    plan = family.names(config)
    for hf_name, our_name, transpose in plan:  # every check first: nothing is read before all pass
        if hf_name not in by_name:
            raise HFImportError(f"{label}: no tensor {hf_name!r}")
        shape = tuple(_shape(tensors, by_name[hf_name]))
        want = tuple(expected[our_name].shape)
        if transpose:
            want = want[::-1]
        if shape != want:
            raise HFImportError(f"{label}: {hf_name} has shape {shape}, config.json implies {want}")
        if not _is_float(tensors, by_name[hf_name]):
            raise HFImportError(f"{label}: {hf_name} is not a floating-point tensor")
    used = {hf for hf, _, _ in plan}
    head_name = None
    if config.tie_embeddings and family.tied[0] in by_name:
        head_name = family.tied[0]
        used.add(head_name)
        if tuple(_shape(tensors, by_name[head_name])) != tuple(expected["head.weight"].shape):
            raise HFImportError(f"{label}: {head_name} has the wrong shape for a head tied to the embeddings")
    unknown = sorted(set(by_name) - used)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise HFImportError(f"{label}: tensors a {family.title} doesn't have: {shown}")

    state: dict[str, torch.Tensor] = {}
    total = len(plan)
    for i, (hf_name, our_name, transpose) in enumerate(plan):
        tensor = tensors[by_name[hf_name]].detach()
        if dtype is not None and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        if transpose:
            tensor = tensor.t()
        if not views:
            tensor = tensor.contiguous()
        if not _all_finite(tensor):
            raise HFImportError(f"{label}: {hf_name} holds NaN or infinite values")
        state[our_name] = tensor
        yield ProgressEvent(job="open", done=i + 1, total=total, message=f"loading weights ({i + 1}/{total})")
    if head_name is not None:
        emb = state["tok_emb.weight"]
        if not torch.equal(tensors[by_name[head_name]].to(emb.dtype), emb):
            raise HFImportError(f"{label}: {head_name} differs from {family.tied[1]}, but config.json says the head is tied to it")
    if config.tie_embeddings:
        state["head.weight"] = state["tok_emb.weight"]  # tied: one tensor
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()  # keep the tie explicit after loading
    return model.eval()


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity in the tensor. A NaN or an infinity makes the sum one too, and a sum is several times
    faster than isfinite() on bf16 and allocates nothing; only a non-finite sum (or an overflow) is looked at
    element by element."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _shape(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
    if isinstance(tensors, MappedWeights):
        return tensors.shape(name)
    return tuple(tensors[name].shape)


def _is_float(tensors: Mapping[str, Any], name: str) -> bool:
    if isinstance(tensors, MappedWeights):
        return tensors.dtype_name(name) in SAFETENSORS_DTYPES
    return torch.is_tensor(tensors[name]) and tensors[name].is_floating_point()


def _run(job: Generator[Any, None, Any]) -> Any:
    """Run a generator job to its end, dropping its events; its return value."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def build_gpt_job(config_json: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, label: str
                  ) -> Generator[ProgressEvent, None, GPT]:
    """Our GPT from a config.json dict and tensors under Hugging Face's names, taken as they are (their dtype,
    transposed Conv1D weights as views: no copy). For readers of other formats (engine.gguf_import)."""
    family = family_of(config_json)
    return (yield from _build(family, family.config(config_json), tensors, dtype=None, views=True, label=label))


def gpt_from_hf(state_dict: Mapping[str, torch.Tensor], config_json: Mapping[str, Any]) -> GPT:
    """Our GPT holding exactly the weights of a Hugging Face state dict (fp32 copies, eval mode)."""
    family = family_of(config_json)
    config = family.config(config_json)
    return _run(_build(family, config, state_dict, dtype=torch.float32, views=False))


# ---------------------------------------------------------------- folders

def folder_label(folder: Path) -> str:
    """How people know a folder: the repo id of a snapshot in the Hugging Face cache, else the folder's name."""
    folder = folder.absolute()
    repo = folder.parent.parent.name
    if folder.parent.name == "snapshots" and repo.startswith("models--"):
        return repo[len("models--"):].replace("--", "/")
    return folder.name or str(folder)


def _read_json(path: Path) -> Any:
    try:
        # A regular file only (a FIFO would block), of bounded size and nesting depth.
        return parse_json(read_regular(path, MAX_JSON_BYTES, path.name).decode("utf-8"), path.name)
    except FileNotFoundError:
        raise HFImportError(f"{path.parent.name} has no {path.name}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HFImportError(f"cannot read {path.name}: {getattr(e, 'strerror', None) or e}") from None


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    config = _read_json(Path(folder) / "config.json")
    if not isinstance(config, dict):
        raise HFImportError("config.json must be a JSON object")
    return config


class MappedWeights(Mapping):
    """The tensors of a folder's safetensors weights (model.safetensors, or the shards its index names), by
    name, memory-mapped: shapes and dtypes come from the headers, a tensor is mapped only when asked for."""

    def __init__(self, folder: str | os.PathLike):
        from safetensors import SafetensorError, safe_open

        folder = Path(folder)
        self.files = self._weight_files(folder)
        self._handles: dict[str, Any] = {}
        self._where: dict[str, str] = {}
        for name in self.files:
            path = folder / name
            if not path.is_file():
                raise HFImportError(f"{name} is missing (named by {WEIGHTS_INDEX}; an unfinished download?)")
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as e:
                raise HFImportError(f"cannot read {name}: {' '.join(str(e).split())[:200]}") from None
            self._handles[name] = handle
            for key in handle.keys():
                if key in self._where:
                    raise HFImportError(f"tensor {key!r} is in both {self._where[key]} and {name}")
                self._where[key] = name
        if self.index is not None:
            for key, file in self.index.items():
                if self._where.get(key) != file:
                    raise HFImportError(f"{WEIGHTS_INDEX} puts {key!r} in {file}, which doesn't hold it")

    def _weight_files(self, folder: Path) -> list[str]:
        self.index: dict[str, str] | None = None
        if (folder / WEIGHTS_INDEX).is_file():
            data = _read_json(folder / WEIGHTS_INDEX)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                raise HFImportError(f"{WEIGHTS_INDEX} has no valid weight_map")
            files = sorted(set(weight_map.values()))
            bad = [f for f in files if not f.endswith(".safetensors") or "/" in f or "\\" in f or f.startswith(".")]
            if bad:
                raise HFImportError(f"{WEIGHTS_INDEX} names {bad[0][:80]!r}, not a .safetensors file of the folder")
            self.index = dict(weight_map)
            return files
        if (folder / SINGLE_WEIGHTS).is_file():
            return [SINGLE_WEIGHTS]
        if (folder / "pytorch_model.bin").exists():
            raise HFImportError(f"{folder.name} has only pytorch_model.bin (a pickle, which we never load); "
                                "download model.safetensors")
        raise HFImportError(f"{folder.name} has no {SINGLE_WEIGHTS} (nor {WEIGHTS_INDEX})")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._handles[self._where[name]].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def dtype_name(self, name: str) -> str:
        """The safetensors dtype: "F32", "BF16", "F16", "I64"..."""
        return self._handles[self._where[name]].get_slice(name).get_dtype()


def load_hf_weights(folder: str | os.PathLike) -> MappedWeights:
    """The tensors of the folder's safetensors weights, memory-mapped (never a pickled pytorch_model.bin)."""
    return MappedWeights(folder)


def load_folder_tokenizer(folder: str | os.PathLike) -> Tokenizer:
    """A model folder's tokenizer: tokenizer.json (with its configs) when present, else vocab.json + merges.txt."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        try:
            return load_hf_tokenizer(folder, name=f"hf:{folder_label(folder)}")
        except ValueError as e:
            raise HFImportError(f"{folder_label(folder)}: {e}") from None
    if not (folder / "vocab.json").is_file() and not (folder / "merges.txt").is_file():
        raise HFImportError(f"{folder_label(folder)} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    return tokenizer_from_hf_files(folder / "vocab.json", folder / "merges.txt")


def _pick_dtype(weights: MappedWeights, dtype: str) -> torch.dtype:
    """The number format to open in: asked for, or ("auto") the file's own (bf16 stays bf16; fp16, which CPUs
    compute slowly, becomes fp32; a mix becomes fp32)."""
    if dtype != "auto":
        if dtype not in DTYPE_NAMES:
            raise HFImportError(f"dtype must be auto, {', '.join(DTYPE_NAMES)}; got {dtype!r}")
        return DTYPE_NAMES[dtype]
    kinds = {weights.dtype_name(n) for n in weights}
    return torch.bfloat16 if kinds == {"BF16"} else torch.float32


def load_hf_folder_job(folder: str | os.PathLike, *, dtype: str = "auto"
                       ) -> Generator[ProgressEvent, None, tuple[GPT, Tokenizer]]:
    """Open a Hugging Face model folder: yields ProgressEvents while the weights map in, returns (GPT, Tokenizer).

    dtype: "auto" (the weights' own format, see _pick_dtype), "fp32", "bf16" or "fp16". The model is in eval
    mode on the CPU and shares the file's memory (see the module docstring). Any problem is an HFImportError
    naming the file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HFImportError(f"{folder} is not a folder")
    config_json = read_hf_config(folder)
    family = family_of(config_json)
    config = family.config(config_json)
    weights = MappedWeights(folder)  # headers only: nothing is read yet
    tokenizer = load_folder_tokenizer(folder)
    if tokenizer.vocab_size > config.vocab_size:
        raise HFImportError(f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model only "
                            f"{config.vocab_size:,}")
    label = ", ".join(weights.files) if len(weights.files) <= 2 else f"the {len(weights.files)} weight files"
    model = yield from _build(family, config, weights, dtype=_pick_dtype(weights, dtype), views=True, label=label)
    return model, tokenizer


def import_hf_folder(folder: str | os.PathLike, *, dtype: str = "fp32") -> tuple[GPT, Tokenizer]:
    """(GPT, Tokenizer) from a Hugging Face folder (see load_hf_folder_job), in fp32 unless asked otherwise."""
    return _run(load_hf_folder_job(folder, dtype=dtype))


def family_title(config_json: Mapping[str, Any]) -> str:
    """'GPT-2' for a gpt2 config.json (HFImportError for an unsupported model_type)."""
    return family_of(config_json).title
