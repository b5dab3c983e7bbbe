"""Attribution: which input tokens a prediction rests on, by gradients through the token embeddings.

Both methods look at one next token (the model's top one at `position`, or a chosen one) and its logit,
and differentiate it with respect to the token embeddings, before position embeddings are added
(`ForwardOptions.token_embeds`: the one inference forward, run under autograd). Only ids[:position + 1]
can matter (the model is causal), so only they are run.

- Gradient x input: per input token, the L2 norm of (d logit / d embedding) * embedding. Non-negative;
  large means a small change of that token's vector would move the logit a lot.
- Integrated gradients (Sundararajan et al., 2017): the embeddings are scaled from 0 (the baseline) to
  their value in `steps` steps; the gradients along that path are averaged (midpoint rule) and multiplied
  by the embedding, then summed over its dimensions. Signed: positive tokens push the logit up. The scores
  add up (nearly, closer with more steps) to logit(text) - logit(all token embeddings zero).
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
from engine.inspect.common import progress, result_of

GRADIENT_X_INPUT, INTEGRATED_GRADIENTS = "gradient_x_input", "integrated_gradients"
DEFAULT_STEPS = 32
MAX_STEPS = 1024
PATH_ROWS = 2048  # token rows per batched forward and backward of integrated gradients (bounds activation memory)
MAX_PATH_BATCH = 32

IdsLike = Sequence[int] | torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Attribution(Event):
    """One score per input token 0..position for the logit of `target` at `position`."""

    ids: tuple[int, ...]  # the text's ids up to and including position
    position: int
    target: int  # the next token explained
    target_prob: float  # its probability at position
    target_logit: float
    method: str  # GRADIENT_X_INPUT or INTEGRATED_GRADIENTS
    scores: np.ndarray  # float32 [position + 1]
    steps: int = 0  # integrated gradients' path steps (0 for gradient x input)
    baseline_logit: float = float("nan")  # integrated gradients: the target's logit with all embeddings zero


def _prepare(model: nn.Module, ids: IdsLike, position: int) -> tuple[Decoder, torch.Tensor]:
    decoder = decoder_for(model)
    idx = as_ids(ids, decoder.config, decoder.device)
    T = idx.shape[1]
    if not 0 <= position < T:
        raise ValueError(f"position {position} is outside the text's {T} tokens (0 to {T - 1})")
    if decoder.quantized:
        raise ValueError("attribution needs gradients, which int8 layers do not have: use an fp32 model")
    return decoder, idx[:, :position + 1]


def _last_logits(decoder: Decoder, idx: torch.Tensor, embeds: torch.Tensor, ablation: Ablation | None) -> torch.Tensor:
    """float32 (B, V) logits of the last position, from token embeddings (B, T, C)."""
    ids = idx.expand(embeds.shape[0], -1)
    return decoder.forward(ids, None, ForwardOptions(logits="last", token_embeds=embeds, ablation=ablation)).logits


def path_batch(tokens: int) -> int:
    """How many points of the integrated-gradients path run in one batch for a text of this many tokens."""
    return max(1, min(MAX_PATH_BATCH, PATH_ROWS // tokens))


def _check_target(decoder: Decoder, target: int | None) -> None:
    if target is not None and not 0 <= target < decoder.config.vocab_size:
        raise ValueError(f"the target token must be an id between 0 and {decoder.config.vocab_size - 1}")


def gradient_x_input(model: nn.Module, ids: IdsLike, position: int, target: int | None = None,
                     ablation: Ablation | None = None) -> Attribution:
    """Gradient x input for the logit of `target` (default: the top token) at `position`."""
    decoder, idx = _prepare(model, ids, position)
    _check_target(decoder, target)
    with torch.inference_mode(False), torch.enable_grad():
        embeds = decoder.token_embeddings(idx).detach().requires_grad_()
        logits = _last_logits(decoder, idx, embeds, ablation)[0]
        target = int(logits.argmax()) if target is None else int(target)
        logits[target].backward()
        scores = (embeds.grad * embeds.detach()).float().norm(dim=-1)[0]
        logits = logits.detach()
        prob = float(torch.softmax(logits, -1)[target])
    return Attribution(ids=tuple(idx[0].tolist()), position=position, target=target, target_prob=prob,
                       target_logit=float(logits[target]), method=GRADIENT_X_INPUT,
                       scores=scores.cpu().numpy().astype(np.float32))


def run_integrated_gradients(model: nn.Module, ids: IdsLike, position: int, target: int | None = None,
                             steps: int = DEFAULT_STEPS, ablation: Ablation | None = None
                             ) -> Iterator[ProgressEvent | Attribution]:
    """A job: integrated gradients with `steps` points on the path, several per batched forward and
    backward (`path_batch`; a progress event before each batch, so it can be stopped), then the Attribution."""
    decoder, idx = _prepare(model, ids, position)
    _check_target(decoder, target)
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"integrated gradients take 1 to {MAX_STEPS} steps, got {steps}")
    with torch.inference_mode():
        embeds = decoder.token_embeddings(idx)  # (1, T, C)
        logits = _last_logits(decoder, idx, embeds, ablation)[0]
        baseline = _last_logits(decoder, idx, torch.zeros_like(embeds), ablation)[0]
    target = int(logits.argmax()) if target is None else int(target)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoints of the path's segments
    grads = []
    batch = path_batch(idx.shape[1])
    for start in range(0, steps, batch):
        yield progress("attribution", start, steps, f"integrated gradients: step {start + 1} of {steps}")
        # Gradient mode is set per batch, never held across a yield (it is per thread, and the caller's).
        with torch.inference_mode(False), torch.enable_grad():
            alpha = alphas[start:start + batch].to(decoder.device, decoder.dtype).view(-1, 1, 1)
            path = (alpha * embeds.clone()).requires_grad_()  # (b, T, C)
            _last_logits(decoder, idx, path, ablation)[:, target].sum().backward()
            grads.append(path.grad.float().sum(0))
    with torch.inference_mode():
        scores = (torch.stack(grads).sum(0) / steps * embeds[0].float()).sum(-1)
    yield Attribution(ids=tuple(idx[0].tolist()), position=position, target=target,
                      target_prob=float(torch.softmax(logits, -1)[target]), target_logit=float(logits[target]),
                      method=INTEGRATED_GRADIENTS, scores=scores.cpu().numpy().astype(np.float32), steps=steps,
                      baseline_logit=float(baseline[target]))


def integrated_gradients(model: nn.Module, ids: IdsLike, position: int, target: int | None = None,
                         steps: int = DEFAULT_STEPS, ablation: Ablation | None = None) -> Attribution:
    return result_of(run_integrated_gradients(model, ids, position, target, steps, ablation))  # type: ignore


def run_attribution(model: nn.Module, ids: IdsLike, position: int, target: int | None = None,
                    method: str = GRADIENT_X_INPUT, steps: int = DEFAULT_STEPS, ablation: Ablation | None = None
                    ) -> Iterator[ProgressEvent | Attribution]:
    """A job for either method (gradient x input is one step)."""
    if method == INTEGRATED_GRADIENTS:
        yield from run_integrated_gradients(model, ids, position, target, steps, ablation)
    elif method == GRADIENT_X_INPUT:
        yield progress("attribution", 0, 1, "gradient x input")
        yield gradient_x_input(model, ids, position, target, ablation)
    else:
        raise ValueError(f"method must be {GRADIENT_X_INPUT} or {INTEGRATED_GRADIENTS}, got {method!r}")
