"""What one inference forward can show or change besides its logits: the options of `Decoder.forward`.

The Attention and Inside views ask the one inference forward (engine/generation/forward.py) for more than
the next token's logits, instead of running a copy of the loop over the blocks:
- logits of every position (token losses), or none (attention maps need none);
- the residual stream after every block (the logit lens: `Decoder.unembed` applied to each);
- every layer's attention weights, softmax(QK^T / sqrt(d)) with the causal mask, (B, H, T, T_total);
- each layer's parts: every head's output (its slice of the attention output before the output
  projection), the attention output and the MLP output (what mean-ablation averages);
- ablation of heads, or of a whole layer's attention or MLP output: zeroed, or replaced by a mean;
- a differentiable run from given token embeddings (before position embeddings are added), so that
  torch autograd gives gradient x input (attribution). Run it outside `torch.inference_mode()`.

`CaptureRun` applies the options inside the loop; when `Decoder.forward` gets no options the loop skips it
altogether, so decoding costs what it did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from engine.config import ModelConfig

LOGITS = ("last", "all", "none")


@dataclass(frozen=True, eq=False)
class AblationMeans:
    """Mean-ablation values: what each part outputs on average over a reference text (`Decoder.ablation_means`)."""

    heads: torch.Tensor  # (n_layers, n_heads, head_dim): each head's slice of the attention output, before out_proj
    attention: torch.Tensor  # (n_layers, emb_dim): each layer's attention output, after out_proj
    mlp: torch.Tensor  # (n_layers, emb_dim): each layer's MLP output


@dataclass(frozen=True, eq=False)
class Ablation:
    """Parts of the model to switch off in one forward; layers and heads count from 0.

    means None: zero-ablation (a head's slice of the attention output before the output projection is
    zeroed; a layer's attention or MLP adds nothing to the residual stream). means given: mean-ablation,
    each ablated part outputs its mean instead.
    """

    heads: tuple[tuple[int, int], ...] = ()  # (layer, head)
    attention: tuple[int, ...] = ()  # layers whose whole attention output is ablated
    mlp: tuple[int, ...] = ()  # layers whose MLP output is ablated
    means: AblationMeans | None = None

    def check(self, config: ModelConfig) -> None:
        """A ValueError naming the first layer or head the model does not have."""
        L, H = config.n_layers, config.n_heads
        for layer, head in self.heads:
            if not (0 <= layer < L and 0 <= head < H):
                raise ValueError(f"no head {layer}.{head}: the model has {L} layers of {H} heads (counted from 0)")
        for layer in (*self.attention, *self.mlp):
            if not 0 <= layer < L:
                raise ValueError(f"no layer {layer}: the model has {L} layers (counted from 0)")
        if self.means is not None:
            D, C = config.head_dim, config.emb_dim
            for name, shape in (("heads", (L, H, D)), ("attention", (L, C)), ("mlp", (L, C))):
                got = tuple(getattr(self.means, name).shape)
                if got != shape:
                    raise ValueError(f"mean-ablation values for {name} have shape {got}, the model needs {shape}")


@dataclass(frozen=True, eq=False)
class ForwardOptions:
    """What `Decoder.forward` should return besides the last position's logits, and what to change.

    logits: "last" (B, V), "all" (B, T, V) or "none".
    capture_residuals / capture_attention / capture_parts: fill ForwardOutput's lists (see there).
    ablation: parts to zero or mean-ablate.
    token_embeds: (B, T, emb_dim) used instead of looking the ids up (position embeddings are still
        added); make it require grad and run outside inference mode for gradient x input.
    """

    logits: Literal["last", "all", "none"] = "last"
    capture_residuals: bool = False
    capture_attention: bool = False
    capture_parts: bool = False
    ablation: Ablation | None = None
    token_embeds: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.logits not in LOGITS:
            raise ValueError(f"logits must be one of {', '.join(LOGITS)}, got {self.logits!r}")


@dataclass(eq=False)
class ForwardOutput:
    """What one forward with options returns. Lists have one entry per layer, empty unless captured."""

    logits: torch.Tensor | None  # float32 (B, V) or (B, T, V); None for logits="none"
    residuals: list[torch.Tensor] = field(default_factory=list)  # (B, T, C): the residual stream after each block
    attentions: list[torch.Tensor] = field(default_factory=list)  # (B, H, T, T_total) softmax weights, float32
    head_outputs: list[torch.Tensor] = field(default_factory=list)  # (B, T, H, D): heads before out_proj
    attention_outputs: list[torch.Tensor] = field(default_factory=list)  # (B, T, C): after out_proj
    mlp_outputs: list[torch.Tensor] = field(default_factory=list)  # (B, T, C)


class CaptureRun:
    """Internal to Decoder.forward: applies a ForwardOptions inside the loop over the blocks and collects a ForwardOutput.

    Ablated heads are switched off by `y * keep + fill` over the (B, T, H, D) head outputs: keep is 0
    for an ablated head and 1 elsewhere, fill is its mean (or 0). Out of place, so autograd sees it.
    """

    def __init__(self, options: ForwardOptions, config: ModelConfig, device: torch.device, dtype: torch.dtype):
        self.options = options
        self.output = ForwardOutput(logits=None)
        ablation = options.ablation
        self.keep: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.attention: set[int] = set()
        self.mlp: set[int] = set()
        self.means = None
        if ablation is None:
            return
        ablation.check(config)
        self.means = ablation.means
        self.attention, self.mlp = set(ablation.attention), set(ablation.mlp)
        H, D = config.n_heads, config.head_dim
        for layer in sorted({layer for layer, _ in ablation.heads}):
            keep = torch.ones(H, 1, device=device, dtype=dtype)
            fill = torch.zeros(H, D, device=device, dtype=dtype)
            for _, head in (h for h in ablation.heads if h[0] == layer):
                keep[head] = 0
                if self.means is not None:
                    fill[head] = self.means.heads[layer, head].to(device, dtype)
            self.keep[layer] = (keep, fill)

    def heads(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        """y (B, T, H, D): the heads' outputs before the output projection."""
        if layer in self.keep:
            keep, fill = self.keep[layer]
            y = y * keep + fill
        if self.options.capture_parts:
            self.output.head_outputs.append(y)
        return y

    def _replace(self, layer: int, out: torch.Tensor, ablated: set[int], means: torch.Tensor | None) -> torch.Tensor:
        if layer in ablated:
            out = torch.zeros_like(out) if means is None else means[layer].to(out).expand_as(out)
        return out

    def attention_out(self, layer: int, a: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """a (B*T, C): the attention output after the output projection, before it joins the residual."""
        a = self._replace(layer, a, self.attention, None if self.means is None else self.means.attention)
        if self.options.capture_parts:
            self.output.attention_outputs.append(a.view(B, T, -1))
        return a

    def mlp_out(self, layer: int, m: torch.Tensor, B: int, T: int) -> torch.Tensor:
        m = self._replace(layer, m, self.mlp, None if self.means is None else self.means.mlp)
        if self.options.capture_parts:
            self.output.mlp_outputs.append(m.view(B, T, -1))
        return m

    def block_out(self, x: torch.Tensor, B: int, T: int) -> None:
        if self.options.capture_residuals:
            self.output.residuals.append(x.view(B, T, -1))
