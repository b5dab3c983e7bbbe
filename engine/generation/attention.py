"""Attention weights for the Attention tab: every layer and head, and their rollout.

`attention_maps` is the one inference forward (`Decoder.forward`) with `capture_attention`: each layer's
softmax(QK^T / sqrt(d)) is built by one fused `baddbmm` (scale + causal mask + QK^T) and a softmax, where
decoding uses the fused SDPA kernel that never materialises it; no dropout whatever the model's
train/eval mode, and no output head (the maps need no logits). It equals transformers' eager attention
(tests/engine/test_attention.py) and costs about one plain forward (`python -m engine bench generate`
prints the ratio).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.generation.capture import ForwardOptions
from engine.generation.forward import as_ids, decoder_for

_MAPS = ForwardOptions(logits="none", capture_attention=True)


def attention_maps(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 [n_layers, n_heads, T, T] attention weights of one sequence (rows sum to 1; row i
    holds how much position i draws from each position j <= i), computed without dropout."""
    decoder = decoder_for(model)
    idx = as_ids(ids, decoder.config, decoder.device)
    with torch.inference_mode():
        maps = torch.cat(decoder.forward(idx, None, _MAPS).attentions)  # (L, H, T, T)
    return maps.cpu().numpy()


def attention_rollout(maps: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): how much each position draws, through all layers,
    from each input token. Per layer: average the heads, add the identity (the residual path),
    renormalise the rows; then multiply the layers from the first up. [L, H, T, T] -> [T, T], rows sum to 1."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"rollout needs maps of shape [layers, heads, T, T], got {maps.shape}")
    T = maps.shape[-1]
    eye = np.eye(T)
    rollout = eye
    for layer in maps:
        a = layer.mean(axis=0) + eye
        a /= a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout  # a later layer mixes what the earlier layers already mixed
    return rollout.astype(np.float32)
