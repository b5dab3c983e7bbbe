"""What every Inside analysis shares: running a job to its result, progress events, losses and perplexity."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from engine.events import Event, ProgressEvent


def progress(job: str, done: int, total: int, message: str) -> ProgressEvent:
    return ProgressEvent(job=job, done=done, total=total, message=message)


def result_of(job: Iterable[Event]) -> Event:
    """Run a job (a generator of progress events ending with its result) and return the result."""
    result = None
    for event in job:
        if not isinstance(event, ProgressEvent):
            result = event
    if result is None:
        raise RuntimeError("the job ended without a result")
    return result


def losses_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """float32 [T] token losses -ln p(ids[i] | ids[:i]) from logits (T, V) of every position; NaN at 0
    (nothing predicts the first token)."""
    out = np.full(ids.shape[-1], np.nan, dtype=np.float32)
    if ids.shape[-1] > 1:
        loss = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:], reduction="none")
        out[1:] = loss.cpu().numpy()
    return out


def perplexity(token_loss: np.ndarray) -> float:
    """exp of the mean token loss (positions 1..T-1); NaN for a one-token text."""
    losses = np.asarray(token_loss, dtype=np.float64)[1:]
    return float(np.exp(losses.mean())) if losses.size else float("nan")
