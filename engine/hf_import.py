"""Import GPT-2 weights from the Hugging Face layout into our GPT, exactly.

A Hugging Face GPT-2 folder holds `config.json`, `model.safetensors`, `vocab.json` and `merges.txt`.
Its tensors map one to one onto ours:

    wte / wpe                 -> tok_emb / pos_emb
    h.N.ln_1, h.N.ln_2        -> blocks.N.ln1, blocks.N.ln2
    h.N.attn.c_attn           -> blocks.N.attn.qkv       (Conv1D: weight stored (in, out), so transposed)
    h.N.attn.c_proj           -> blocks.N.attn.out_proj  (Conv1D, transposed)
    h.N.mlp.c_fc / c_proj     -> blocks.N.mlp.fc / proj  (Conv1D, transposed)
    ln_f                      -> ln_f
    lm_head                   -> head (tied to tok_emb, as GPT-2)

Names may carry a `transformer.` prefix (a `GPT2LMHeadModel` state dict) or not (the hub's files).
Only what our model can represent exactly is accepted; anything else is refused with one clear line.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engine.config import ModelConfig
from engine.model import GPT
from engine.tokenizers import tokenizer_from_hf_files

# Activations that are the tanh-approximated GELU our MLP uses (gelu_fast is the same formula).
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
# Non-parameter buffers some transformers versions put in the state dict (the causal mask).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class HFImportError(ValueError):
    """A Hugging Face folder or state dict that can't become our GPT; the message is for the user."""


def config_from_hf(config_json: Mapping[str, Any]) -> ModelConfig:
    """Our ModelConfig from a GPT-2 `config.json`; refuses options our model cannot reproduce."""
    if not isinstance(config_json, Mapping):
        raise HFImportError("config.json must be a JSON object")
    model_type = config_json.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise HFImportError(f"only GPT-2 models can be imported; this config is model_type {model_type!r}")
    try:
        n_embd = int(config_json["n_embd"])
        n_layer = int(config_json["n_layer"])
        n_head = int(config_json["n_head"])
        n_positions = int(config_json["n_positions"])
        vocab_size = int(config_json["vocab_size"])
    except KeyError as e:
        raise HFImportError(f"config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError):
        raise HFImportError("config.json has a non-numeric size field") from None

    def refuse(what: str) -> None:
        raise HFImportError(f"cannot import this GPT-2: {what} (our model can't represent it exactly)")

    activation = config_json.get("activation_function", "gelu_new")
    if activation not in _TANH_GELUS:
        refuse(f"activation_function is {activation!r}, ours is the tanh GELU ('gelu_new')")
    eps = float(config_json.get("layer_norm_epsilon", 1e-5))
    if abs(eps - 1e-5) > 1e-12:
        refuse(f"layer_norm_epsilon is {eps}, ours is 1e-5")
    n_inner = config_json.get("n_inner")
    if n_inner is not None and int(n_inner) != 4 * n_embd:
        refuse(f"n_inner is {n_inner}, ours is 4 x n_embd = {4 * n_embd}")
    if not config_json.get("scale_attn_weights", True):
        refuse("scale_attn_weights is false")
    if config_json.get("scale_attn_by_inverse_layer_idx", False):
        refuse("scale_attn_by_inverse_layer_idx is true")
    if config_json.get("add_cross_attention", False):
        refuse("it has cross-attention")
    if not config_json.get("tie_word_embeddings", True):
        refuse("its output head is not tied to the token embeddings")
    # GPT-2 has three dropout rates, all 0.1 in every released model; ours has one (used for all three).
    drop = float(config_json.get("resid_pdrop", 0.1))
    try:
        return ModelConfig(vocab_size=vocab_size, context_length=n_positions, emb_dim=n_embd,
                           n_heads=n_head, n_layers=n_layer, drop_rate=drop, qkv_bias=True)
    except ValueError as e:
        raise HFImportError(f"config.json describes a model we can't build: {e}") from None


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        out[name] = tensor
    return out


def _map_names(config: ModelConfig) -> list[tuple[str, str, bool]]:
    """(hf name, our name, transpose) for every tensor of the model."""
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


def gpt_from_hf(state_dict: Mapping[str, torch.Tensor], config_json: Mapping[str, Any]) -> GPT:
    """Our GPT holding exactly the weights of a Hugging Face GPT-2 state dict (in fp32, eval mode)."""
    config = config_from_hf(config_json)
    hf = _strip_prefix(state_dict)
    model = GPT(config)
    ours = model.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    used = set()
    for hf_name, our_name, transpose in _map_names(config):
        if hf_name not in hf:
            raise HFImportError(f"the weights lack {hf_name!r}")
        tensor = hf[hf_name]
        used.add(hf_name)
        if transpose:
            tensor = tensor.t()
        expected = tuple(ours[our_name].shape)
        if tuple(tensor.shape) != expected:
            raise HFImportError(
                f"{hf_name} has shape {tuple(hf[hf_name].shape)}, config.json implies {expected}"
                + (" (transposed)" if transpose else "")
            )
        if not tensor.is_floating_point():
            raise HFImportError(f"{hf_name} is not a floating-point tensor")
        new_state[our_name] = tensor.detach().to(torch.float32).contiguous()
    if "lm_head.weight" in hf:
        used.add("lm_head.weight")
        if not torch.equal(hf["lm_head.weight"].to(torch.float32), new_state["tok_emb.weight"]):
            raise HFImportError("lm_head.weight differs from wte.weight: our output head is always tied")
    unknown = sorted(set(hf) - used)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise HFImportError(f"the weights have tensors a GPT-2 doesn't: {shown}")
    new_state["head.weight"] = new_state["tok_emb.weight"]  # tied: one tensor
    bad = [n for n, t in new_state.items() if not torch.isfinite(t).all()]
    if bad:
        raise HFImportError(f"{bad[0]} holds NaN or infinite values")
    model.load_state_dict(new_state, strict=True)
    model.head.weight = model.tok_emb.weight  # keep the tie explicit after loading
    return model.eval()


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFImportError(f"{folder} has no config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFImportError(f"cannot read {path}: {e}") from None


def load_hf_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of `model.safetensors` (never a pickled pytorch_model.bin)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / "model.safetensors"
    if not path.exists():
        if (Path(folder) / "pytorch_model.bin").exists():
            raise HFImportError(
                f"{folder} has only pytorch_model.bin (a pickle, which we never load); download model.safetensors"
            )
        raise HFImportError(f"{folder} has no model.safetensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise HFImportError(f"cannot read {path}: {e}") from None


def import_hf_folder(folder: str | os.PathLike):
    """(GPT, Tokenizer) from a Hugging Face GPT-2 folder; the tokenizer is a tiktoken Encoding."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HFImportError(f"{folder} is not a folder")
    config_json = read_hf_config(folder)
    model = gpt_from_hf(load_hf_weights(folder), config_json)
    tokenizer = tokenizer_from_hf_files(folder / "vocab.json", folder / "merges.txt")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise HFImportError(
            f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model only {model.config.vocab_size:,}"
        )
    return model, tokenizer
