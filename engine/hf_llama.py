"""The llama family from a Hugging Face folder: `config.json` of model_type llama, qwen2 or mistral, and the
names of its tensors in ours (engine/hf_import.py reads the folder and builds the model).

    model.embed_tokens                          -> tok_emb
    model.layers.N.input_layernorm              -> blocks.N.ln1            (RMSNorm)
    model.layers.N.self_attn.{q,k,v}_proj       -> blocks.N.attn.{q,k,v}_proj  (biases: Qwen2)
    model.layers.N.self_attn.o_proj             -> blocks.N.attn.out_proj
    model.layers.N.post_attention_layernorm     -> blocks.N.ln2
    model.layers.N.mlp.{gate,up,down}_proj      -> blocks.N.mlp.{gate,up,down}_proj
    model.norm                                  -> ln_f
    lm_head                                     -> head (absent or equal to embed_tokens when tied)

Both config.json dialects are read: transformers 4's `rope_theta` + `rope_scaling` and transformers 5's
`rope_parameters`. Only what our model reproduces exactly is accepted (rope scalings linear, dynamic and
llama3; SiLU; no output-projection or MLP biases; no partial rotary); anything else is a ValueError whose
message names the field, for the importer to pass on.

The context in use is max_position_embeddings, capped at engine.config.MAX_CONTEXT_LENGTH and at the sliding
window of a Mistral (or a Qwen2 with use_sliding_window): within the window, sliding-window attention is plain
causal attention, so capping the context keeps the model exact instead of refusing it (`context_note` says so).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.config import MAX_CONTEXT_LENGTH, ModelConfig, RopeScaling

TITLES = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}
# transformers' defaults where a config.json leaves a field out (LlamaConfig, Qwen2Config, MistralConfig).
_DEFAULT_CONTEXT = {"llama": 2048, "qwen2": 32768, "mistral": 131072}
_ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
              "original_max_position_embeddings"}


def _int(config_json: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = config_json.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"config.json lacks {name!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"config.json: {name} must be a whole number, got {str(value)[:40]!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config.json: {name} must be a number, got {str(value)[:40]!r}")
    return float(value)


def _rope(config_json: Mapping[str, Any], context: int) -> tuple[float, RopeScaling | None]:
    """(rope_theta, rope_scaling) from either dialect; `context` is max_position_embeddings."""
    params = config_json.get("rope_parameters")
    scaling = config_json.get("rope_scaling")
    if params is not None and not isinstance(params, Mapping):
        raise ValueError("config.json: rope_parameters must be an object")
    if scaling is not None and not isinstance(scaling, Mapping):
        raise ValueError("config.json: rope_scaling must be an object or null")
    rope = {**(params or {}), **(scaling or {})}
    theta = _number(rope.get("rope_theta", config_json.get("rope_theta", 10000.0)), "rope_theta")
    partial = rope.get("partial_rotary_factor", config_json.get("partial_rotary_factor", 1.0))
    if partial is not None and _number(partial, "partial_rotary_factor") != 1.0:
        raise ValueError("config.json: partial rotary embeddings (partial_rotary_factor) are not supported")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in ("linear", "dynamic", "llama3"):
        raise ValueError(f"config.json: rope scaling {str(kind)[:40]!r} is not supported "
                         "(supported: linear, dynamic, llama3)")
    unknown = set(rope) - _ROPE_KEYS - {"partial_rotary_factor"}
    if unknown:
        raise ValueError(f"config.json: {kind} rope scaling with {', '.join(sorted(unknown))} is not supported")
    factor = _number(rope.get("factor"), "rope scaling factor")
    if kind == "linear":
        return theta, RopeScaling("linear", factor)
    if kind == "dynamic":
        # transformers scales from max_position_embeddings (the config's, not a rope field).
        return theta, RopeScaling("dynamic", factor, original_max_position_embeddings=context)
    original = rope.get("original_max_position_embeddings", context)
    return theta, RopeScaling("llama3", factor, original_max_position_embeddings=original,
                              low_freq_factor=_number(rope.get("low_freq_factor"), "low_freq_factor"),
                              high_freq_factor=_number(rope.get("high_freq_factor"), "high_freq_factor"))


def sliding_window(config_json: Mapping[str, Any]) -> int | None:
    """The attention window a Mistral or Qwen2 config uses (None: full causal attention)."""
    model_type = config_json.get("model_type")
    window = config_json.get("sliding_window")
    if model_type == "qwen2":
        layer_types = config_json.get("layer_types")
        sliding_layers = isinstance(layer_types, list) and "sliding_attention" in layer_types
        if not (config_json.get("use_sliding_window", False) or sliding_layers):
            return None
    elif model_type != "mistral":
        return None
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"config.json: sliding_window must be a positive whole number, got {str(window)[:40]!r}")
    return window


def context_note(config_json: Mapping[str, Any]) -> str | None:
    """Why the context in use is shorter than the model's max_position_embeddings, for people; None when it isn't."""
    model_type = config_json.get("model_type")
    full = _int(config_json, "max_position_embeddings", _DEFAULT_CONTEXT.get(model_type, 2048))
    window = sliding_window(config_json)
    if window is not None and window < min(full, MAX_CONTEXT_LENGTH):
        return f"context capped at the sliding window of {window:,} tokens (the model takes {full:,})"
    if full > MAX_CONTEXT_LENGTH:
        return f"context capped at {MAX_CONTEXT_LENGTH:,} tokens (the model takes {full:,})"
    return None


def llama_config(config_json: Mapping[str, Any]) -> ModelConfig:
    """Our ModelConfig (arch "llama") from a llama / qwen2 / mistral config.json; ValueError for anything else."""
    model_type = config_json.get("model_type")
    if model_type not in TITLES:
        raise ValueError(f"config.json: model_type {str(model_type)[:40]!r} is not of the llama family")
    hidden = _int(config_json, "hidden_size")
    heads = _int(config_json, "num_attention_heads")
    context = _int(config_json, "max_position_embeddings", _DEFAULT_CONTEXT[model_type])
    act = config_json.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json: hidden_act is {str(act)[:40]!r}; the llama family's MLP is SwiGLU (silu)")
    if config_json.get("mlp_bias", False):
        raise ValueError("config.json: mlp_bias is true; MLP biases are not supported")
    if model_type == "llama" and config_json.get("attention_bias", False):
        raise ValueError("config.json: attention_bias is true (a bias on the output projection too), "
                         "which is not supported")
    if config_json.get("pretraining_tp", 1) not in (1, None):
        raise ValueError("config.json: pretraining_tp other than 1 is not supported")
    theta, scaling = _rope(config_json, context)
    eps = _number(config_json.get("rms_norm_eps", 1e-6), "rms_norm_eps")
    drop = _number(config_json.get("attention_dropout", 0.0), "attention_dropout")
    tied = config_json.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise ValueError(f"config.json: tie_word_embeddings must be true or false, got {str(tied)[:40]!r}")
    window = sliding_window(config_json)
    in_use = min(context, MAX_CONTEXT_LENGTH, window or context)
    head_dim = config_json.get("head_dim")
    return ModelConfig(
        arch="llama", vocab_size=_int(config_json, "vocab_size"), context_length=in_use, emb_dim=hidden,
        n_heads=heads, n_layers=_int(config_json, "num_hidden_layers"), drop_rate=drop,
        qkv_bias=model_type == "qwen2", n_kv_heads=_int(config_json, "num_key_value_heads", heads),
        head_dim=None if head_dim is None else _int(config_json, "head_dim"),
        hidden_dim=_int(config_json, "intermediate_size"), norm_eps=eps, rope_theta=theta, rope_scaling=scaling,
        tie_embeddings=tied)


def llama_names(config: ModelConfig) -> list[tuple[str, str, bool]]:
    """(hf name, our name, transpose) for every tensor of a llama-family model (never transposed)."""
    pairs = [("model.embed_tokens.weight", "tok_emb.weight"), ("model.norm.weight", "ln_f.weight")]
    if not config.tie_embeddings:
        pairs.append(("lm_head.weight", "head.weight"))
    projections = [("self_attn.q_proj", "attn.q_proj"), ("self_attn.k_proj", "attn.k_proj"),
                   ("self_attn.v_proj", "attn.v_proj")]
    for i in range(config.n_layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        pairs += [(h + "input_layernorm.weight", b + "ln1.weight"),
                  (h + "post_attention_layernorm.weight", b + "ln2.weight"),
                  (h + "self_attn.o_proj.weight", b + "attn.out_proj.weight")]
        for hf, ours in projections:
            pairs.append((h + hf + ".weight", b + ours + ".weight"))
            if config.qkv_bias:
                pairs.append((h + hf + ".bias", b + ours + ".bias"))
        for proj in ("gate_proj", "up_proj", "down_proj"):
            pairs.append((h + "mlp." + proj + ".weight", b + "mlp." + proj + ".weight"))
    return [(hf, ours, False) for hf, ours in pairs]
