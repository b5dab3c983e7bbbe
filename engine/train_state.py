"""What a checkpoint says about its training run, checked field by field before anything uses it.

`train_state` (written by `Trainer.state()`): step, train_config, corpus, corpus_name, tokenizer_spec,
elapsed_s, history (loss, learning rate, ... per step; validation losses per evaluation) and rng (the
torch and batch-sampler random states, base64). `optimizer` metadata: AdamW's settings per parameter
group and the names of the parameters in it.

A file may come from anywhere, so every field is bounded: a negative step, `train_config` given as a
list, a history value of 1e309, strings where numbers go or `amsgrad: true` are each one clear
ValueError here, instead of an OverflowError in a spin box or a KeyError deep inside torch's AdamW.
Fields this version does not know are kept as they are (a newer version may have written them).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

import torch

from engine.config import MAX_STEPS, TrainConfig
from engine.validate import boolean, number, number_list, short_repr, text, whole_number

HISTORY_KEYS = ("step", "loss", "lr", "tokens_seen", "tokens_per_s", "val_step", "val_loss", "val_tokens_seen")
STEP_KEYS = HISTORY_KEYS[:5]  # one entry per optimizer step
EVAL_KEYS = HISTORY_KEYS[5:]  # one entry per evaluation
MAX_HISTORY = MAX_STEPS + 1
MAX_PATH_CHARS = 4096
MAX_SPEC_CHARS = 4096
MAX_ELAPSED_S = 1e10  # three centuries
MAX_TOKENS_SEEN = 2**62
# Optimizer group settings kept in the metadata (the rest, e.g. `fused`, belong to the machine).
GROUP_SETTINGS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
MAX_GROUPS = 16


def empty_history() -> dict[str, list]:
    return {k: [] for k in HISTORY_KEYS}


def rng_to_str(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def rng_from_str(encoded: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(encoded, validate=True)), dtype=torch.uint8)


def _check_rng(rng: Any) -> dict[str, str]:
    if not isinstance(rng, dict):
        raise ValueError("rng must be an object")
    cpu_bytes = torch.get_rng_state().numel()
    for key, value in rng.items():
        text(value, f"rng.{key}", 1 << 16)
        try:
            state = rng_from_str(value)
        except (binascii.Error, ValueError):
            raise ValueError(f"rng.{key} is not base64") from None
        if key in ("torch", "batch"):
            if state.numel() != cpu_bytes:
                raise ValueError(f"rng.{key} holds {state.numel():,} bytes, a random state has {cpu_bytes:,}")
            try:
                torch.Generator().set_state(state)  # torch checks the Mersenne Twister state
            except RuntimeError:
                raise ValueError(f"rng.{key} is not a valid random state") from None
    return rng


def check_history(history: Any) -> dict[str, list]:
    """The loss history: lists of finite numbers (null where a value was not finite), bounded in length,
    the per-step lists all as long as `step` and the per-evaluation ones as long as `val_step`."""
    if not isinstance(history, dict):
        raise ValueError(f"history must be an object, got {short_repr(history)}")
    for key in HISTORY_KEYS:
        value = history.get(key, [])
        if key in ("step", "val_step"):
            number_list(value, f"history.{key}", MAX_HISTORY, lo=0, hi=MAX_STEPS)
            if any(isinstance(v, float) and not v.is_integer() for v in value):
                raise ValueError(f"history.{key} must hold whole step numbers")
        elif key in ("tokens_seen", "val_tokens_seen"):
            number_list(value, f"history.{key}", MAX_HISTORY, lo=0, hi=MAX_TOKENS_SEEN)
        else:
            number_list(value, f"history.{key}", MAX_HISTORY, allow_null=True)
    for keys, lead in ((STEP_KEYS, "step"), (EVAL_KEYS, "val_step")):
        n = len(history.get(lead, []))
        for key in keys:
            if key in history and len(history[key]) != n:
                raise ValueError(f"history.{key} has {len(history[key]):,} entries but history.{lead} has {n:,}")
    return history


def check_train_state(state: Any) -> dict[str, Any]:
    """`state` if every field it has is well-formed and in range; ValueError (one line) otherwise."""
    if not isinstance(state, dict):
        raise ValueError(f"the training state must be an object, got {short_repr(state)}")
    if "step" in state:
        whole_number(state["step"], "step", 0, MAX_STEPS)
    if "train_config" in state:
        TrainConfig.from_dict(state["train_config"])
    for key, limit in (("corpus", MAX_PATH_CHARS), ("corpus_name", MAX_PATH_CHARS),
                       ("tokenizer_spec", MAX_SPEC_CHARS)):
        if state.get(key) is not None:
            text(state[key], key, limit)
    if "elapsed_s" in state:
        number(state["elapsed_s"], "elapsed_s", 0.0, MAX_ELAPSED_S)
    if "history" in state:
        check_history(state["history"])
    if "rng" in state:
        _check_rng(state["rng"])
    return state


def check_optimizer_meta(meta: Any, param_names: list[str]) -> dict[str, Any]:
    """AdamW's saved settings: each group's numbers in range, `amsgrad` and `maximize` off (this version
    never saves the extra state they need), every parameter of the model named once."""
    if not isinstance(meta, dict):
        raise ValueError("the optimizer metadata must be an object")
    if meta.get("type", "AdamW") != "AdamW":
        raise ValueError(f"optimizer type {short_repr(meta.get('type'))} is not supported (only AdamW)")
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or not 1 <= len(groups) <= MAX_GROUPS:
        raise ValueError(f"optimizer param_groups must be a list of 1 to {MAX_GROUPS} groups")
    known, seen = set(param_names), set()
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise ValueError(f"optimizer group {i} must be an object")
        where = f"optimizer group {i}"
        unknown = set(group) - set(GROUP_SETTINGS) - {"params"}
        if unknown:
            raise ValueError(f"{where} has unknown setting {short_repr(sorted(unknown)[0])}")
        if "lr" in group:
            number(group["lr"], f"{where} lr", 0.0, 1.0)
        if "betas" in group:
            betas = group["betas"]
            if not isinstance(betas, list) or len(betas) != 2:
                raise ValueError(f"{where} betas must be a list of two numbers")
            for beta in betas:
                number(beta, f"{where} beta", 0.0, 0.999999999)
        if "eps" in group:
            number(group["eps"], f"{where} eps", 1e-30, 1.0)
        if "weight_decay" in group:
            number(group["weight_decay"], f"{where} weight_decay", 0.0, 10.0)
        for flag in ("amsgrad", "maximize"):
            if flag in group and boolean(group[flag], f"{where} {flag}"):
                raise ValueError(f"{where} has {flag} on, which this version never saves")
        names = group.get("params")
        if not isinstance(names, list):
            raise ValueError(f"{where} params must be a list of parameter names")
        for name in names:
            if not isinstance(name, str) or name not in known:
                raise ValueError(f"{where} names {short_repr(name)}, which is not a parameter of this model")
            if name in seen:
                raise ValueError(f"{where} names {short_repr(name)} twice")
            seen.add(name)
    if seen != known:
        raise ValueError(f"the optimizer state does not cover the parameter {sorted(known - seen)[0]!r}")
    return meta
