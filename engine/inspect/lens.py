"""The logit lens and per-token surprise of a text, from one inference forward.

The logit lens (nostalgebraist, 2020) reads the residual stream after each block as if it were the last:
the model's final norm and output head turn it into a next-token distribution (`Decoder.unembed`). The
last block's lens is the model's own output, so the token losses -ln p(ids[i] | ids[:i]) come from it
too. One forward with `capture_residuals` gives every block's output; each is then unembedded in chunks
of positions, so memory stays at LENS_CHUNK x vocab floats per step even for GPT-2's 50,257 tokens.
Cost: one forward plus n_layers head matmuls over the text (`python -m engine bench inspect`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from engine.events import Event, ProgressEvent
from engine.generation.capture import Ablation, ForwardOptions
from engine.generation.forward import Decoder, as_ids, decoder_for
from engine.inspect.common import losses_from_logits, perplexity, progress, result_of

LENS_CHUNK = 256  # positions unembedded at once
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class LogitLens(Event):
    """Per block and position: the lens's top tokens, the rank of the actual next token and the entropy.

    Arrays are indexed [layer, position]; layer n_layers - 1 is the model's own output.
    """

    ids: tuple[int, ...]
    top_ids: np.ndarray  # int64 [L, T, K], most probable first
    top_probs: np.ndarray  # float32 [L, T, K]
    next_rank: np.ndarray  # int64 [L, T]: rank of ids[t + 1] (0 = the top token); -1 at the last position
    entropy: np.ndarray  # float32 [L, T], in nats
    token_loss: np.ndarray  # float32 [T]: -ln p(ids[i] | ids[:i]) under the model; NaN at 0

    @property
    def perplexity(self) -> float:
        return perplexity(self.token_loss)


def _lens_of_block(decoder: Decoder, x: torch.Tensor, targets: torch.Tensor, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (T, C) one block's output; targets (T,) the next ids (-1 where none). Returns top ids, top probs,
    rank of the target, entropy and the target's log-probability (0 where none), chunk by chunk."""
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, x.shape[0], LENS_CHUNK):
        logits = decoder.unembed(x[start:start + LENS_CHUNK])  # (n, V) float32
        target = targets[start:start + LENS_CHUNK]
        logp = torch.log_softmax(logits, dim=-1)
        top_logp, top_ids = logp.topk(k, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        has = target >= 0
        target_logit = logits.gather(1, target.clamp(min=0).unsqueeze(1))
        rank = torch.where(has, (logits > target_logit).sum(-1), torch.full_like(target, -1))
        target_logp = torch.where(has, logp.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1),
                                  torch.zeros_like(entropy))
        parts.append((top_ids, top_logp.exp(), rank, entropy, target_logp))
    return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]


def run_logit_lens(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray, top_k: int = DEFAULT_TOP_K,
                   ablation: Ablation | None = None) -> Iterator[ProgressEvent | LogitLens]:
    """A job: the forward, then one progress event per block's lens, then the LogitLens.
    `ablation` switches parts of the model off for the whole run (engine.generation.capture.Ablation)."""
    decoder = decoder_for(model)
    config = decoder.config
    idx = as_ids(ids, config, decoder.device)
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, got {top_k}")
    k = min(top_k, config.vocab_size)
    L, T = config.n_layers, idx.shape[1]
    yield progress("logit_lens", 0, L + 1, f"running the model on {T} tokens")
    with torch.inference_mode():
        out = decoder.forward(idx, None, ForwardOptions(logits="none", capture_residuals=True, ablation=ablation))
        residuals = [r[0] for r in out.residuals]  # each (T, C)
    targets = torch.full((T,), -1, dtype=torch.long, device=decoder.device)
    targets[:-1] = idx[0, 1:]
    columns: list[list[np.ndarray]] = [[], [], [], []]
    last_logp = None
    for layer, x in enumerate(residuals):
        yield progress("logit_lens", layer + 1, L + 1, f"lens of block {layer}")
        with torch.inference_mode():
            top_ids, top_probs, rank, entropy, target_logp = _lens_of_block(decoder, x, targets, k)
        for column, value in zip(columns, (top_ids, top_probs, rank, entropy)):
            column.append(value.cpu().numpy())
        last_logp = target_logp
    token_loss = np.full(T, np.nan, dtype=np.float32)
    token_loss[1:] = -last_logp[:-1].cpu().numpy()
    top_ids, top_probs, rank, entropy = (np.stack(c) for c in columns)
    yield LogitLens(ids=tuple(int(i) for i in idx[0].tolist()), top_ids=top_ids.astype(np.int64),
                    top_probs=top_probs.astype(np.float32), next_rank=rank.astype(np.int64),
                    entropy=entropy.astype(np.float32), token_loss=token_loss)


def logit_lens(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray, top_k: int = DEFAULT_TOP_K,
               ablation: Ablation | None = None) -> LogitLens:
    """The LogitLens of a text (see run_logit_lens)."""
    return result_of(run_logit_lens(model, ids, top_k, ablation))  # type: ignore[return-value]


def token_losses(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray,
                 ablation: Ablation | None = None) -> np.ndarray:
    """float32 [T]: -ln p(ids[i] | ids[:i]) for i >= 1, NaN at 0, from one forward (no lens)."""
    decoder = decoder_for(model)
    idx = as_ids(ids, decoder.config, decoder.device)
    with torch.inference_mode():
        logits = decoder.forward(idx, None, ForwardOptions(logits="all", ablation=ablation)).logits[0]
        return losses_from_logits(logits, idx[0])
