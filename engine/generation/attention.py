"""Attention weights for the Attention tab: every layer and head, and their rollout.

The fast SDPA path of GPT.forward never materialises the softmax(QK^T / sqrt(d)) matrices, and the
model's explicit path (return_attention=True) builds each one in several passes (matmul, scale, mask,
softmax). `attention_maps` runs its own inference-only pass over the model's weights instead: one fused
`baddbmm` (scale + causal mask + QK^T) and a softmax per layer, no dropout whatever the model's
train/eval mode, and no output head (the maps don't need logits). It equals the model's explicit path
(tests/test_attention.py) and costs about one plain forward (`python -m engine bench generate` prints
the ratio).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _as_ids(ids: Sequence[int] | torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(ids, dtype=np.int64) if not isinstance(ids, torch.Tensor) else ids)
    if idx.dim() == 2 and idx.shape[0] == 1:
        idx = idx[0]
    if idx.dim() != 1:
        raise ValueError(f"attention maps take one sequence of token ids, got shape {tuple(idx.shape)}")
    return idx.to(device=device, dtype=torch.long).unsqueeze(0)


def attention_maps(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 [n_layers, n_heads, T, T] attention weights of one sequence (rows sum to 1; row i
    holds how much position i draws from each position j <= i), computed without dropout."""
    config = model.config
    device = next(model.parameters()).device
    idx = _as_ids(ids, device)
    T = idx.shape[1]
    if T == 0:
        raise ValueError("attention maps need at least one token")
    if T > config.context_length:
        raise ValueError(f"{T} tokens are more than the model's context length ({config.context_length})")
    if int(idx.min()) < 0 or int(idx.max()) >= config.vocab_size:
        raise ValueError(f"token ids must be between 0 and {config.vocab_size - 1}")
    with torch.inference_mode():
        maps = _forward_with_attention(model, idx[0])
    return maps.float().cpu().numpy()


def _forward_with_attention(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The blocks of GPT.forward (eval maths) for one sequence, returning (L, H, T, T) weights."""
    config = model.config
    T, C, H = ids.shape[0], config.emb_dim, config.n_heads
    D = C // H
    x = model.tok_emb.weight[ids] + model.pos_emb.weight[:T]  # (T, C)
    mask = torch.full((T, T), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)  # -inf above the diagonal
    scale = 1.0 / math.sqrt(D)
    maps = []
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        h = F.layer_norm(x, (C,), block.ln1.weight, block.ln1.bias, block.ln1.eps)
        q, k, v = F.linear(h, attn.qkv.weight, attn.qkv.bias).view(T, 3, H, D).permute(1, 2, 0, 3)  # (H, T, D)
        weights = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale).softmax(dim=-1)  # (H, T, T)
        maps.append(weights)
        y = torch.bmm(weights, v).transpose(0, 1).reshape(T, C)
        x = x + F.linear(y, attn.out_proj.weight, attn.out_proj.bias)
        h = F.layer_norm(x, (C,), block.ln2.weight, block.ln2.bias, block.ln2.eps)
        x = x + F.linear(F.gelu(F.linear(h, mlp.fc.weight, mlp.fc.bias), approximate="tanh"),
                         mlp.proj.weight, mlp.proj.bias)
    return torch.stack(maps)


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
