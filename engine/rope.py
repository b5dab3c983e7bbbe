"""Rotary position embeddings (RoPE) of the Llama family: frequencies, their scalings, and the rotation.

A head's vector of width D is read as D/2 pairs (x[i], x[i + D/2]) (transformers' "rotate half" layout;
llama.cpp interleaves the pairs instead, which engine/gguf_reader.py undoes when it reads a GGUF file), and
pair i at position p turns by the angle p * inv_freq[i], with inv_freq[i] = 1 / theta^(2i / D). Queries and
keys are both turned, so their dot product depends only on how far apart the two positions are.

`rope_scaling` (engine.config.RopeScaling) changes the frequencies for long contexts:
- linear: inv_freq / factor;
- dynamic (NTK-aware): a sequence of L > original_max_position_embeddings tokens gets a larger base,
  theta * (factor * L / original - (factor - 1)) ^ (D / (D - 2)); shorter sequences keep the plain one.
  transformers recomputes it on every forward pass past the original context, so a cached key keeps the
  rotation of the step that wrote it; `inv_frequencies(config, seq_len)` is the same rule, without state;
- llama3: wavelengths longer than original / low_freq_factor are divided by factor, those shorter than
  original / high_freq_factor kept, a linear ramp (in 1 / wavelength) in between.

The numbers are computed as transformers' modeling_rope_utils computes them (float32, same order of
operations), so logits match its models to float32 rounding.
"""
from __future__ import annotations

import math

import torch

from engine.config import ModelConfig


def _plain(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))


def inv_frequencies(config: ModelConfig, seq_len: int = 0) -> torch.Tensor:
    """float32 (head_dim / 2,) angular frequencies for a forward pass over positions < seq_len (only dynamic
    scaling looks at seq_len)."""
    dim, theta, scaling = config.head_dim, config.rope_theta, config.rope_scaling
    if scaling is None:
        return _plain(theta, dim)
    if scaling.rope_type == "linear":
        return _plain(theta, dim) / scaling.factor
    if scaling.rope_type == "dynamic":
        original = scaling.original_max_position_embeddings
        if seq_len <= original:
            return _plain(theta, dim)
        # float32 arithmetic as transformers' (it gets seq_len as a tensor there).
        length = torch.tensor(seq_len, dtype=torch.int64)
        base = theta * ((scaling.factor * length / original) - (scaling.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    # llama3
    inv_freq = _plain(theta, dim)
    factor, low, high = scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor
    old = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) * ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


class RotaryTables:
    """cos and sin of every (position, frequency) a forward pass needs, as (T, head_dim) tables in the
    activations' dtype. Without dynamic scaling the frequencies never change and are computed once."""

    def __init__(self, config: ModelConfig, device: torch.device | str):
        self.config = config
        self.device = torch.device(device)
        self.dynamic = config.rope_scaling is not None and config.rope_scaling.rope_type == "dynamic"
        self.fixed = None if self.dynamic else inv_frequencies(config).to(self.device)

    def __call__(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (length, head_dim), for positions start .. start + length - 1."""
        inv_freq = self.fixed if self.fixed is not None else \
            inv_frequencies(self.config, start + length).to(self.device)
        positions = torch.arange(start, start + length, device=self.device, dtype=torch.float)
        freqs = positions[:, None] * inv_freq  # (T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, D): pair i uses columns i and i + D/2
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, D) turned by the tables' angles: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
