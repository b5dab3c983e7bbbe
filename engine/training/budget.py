"""How much an evaluation reads: sized by its cost against the training between two evaluations.

By default each evaluation reads ceil(1.5 * EVAL_SHARE * eval_interval * grad_accum) batches per split (at most
eval_batches): a forward pass costs a third of a training step's work per token and an evaluation reads two
splits (validation and training), so that is about EVAL_SHARE (10%) of the training time between two
evaluations. `eval_tokens` sets the tokens per split instead. Counted in whole batches, the count is the same on
every rank of a torchrun job as in one process with the global batch.

The evaluation before the first step is made only when cheap (under FIRST_EVAL_FLOPS): a 124M model's first
evaluation at batch 1 and full context would take a minute on a laptop CPU before anything was trained.
"""
from __future__ import annotations

import math

from engine.config import TrainConfig

EVAL_SHARE = 0.1  # an automatic evaluation costs about this share of the training time between two
FIRST_EVAL_FLOPS = 1e11  # a second or two on a laptop CPU; a fixed count, so every torchrun rank agrees


def eval_batches_per_split(config: TrainConfig, context_length: int) -> int:
    """Batches (of batch_size sequences) read from each split at every evaluation."""
    if config.eval_tokens:
        return max(1, math.ceil(config.eval_tokens / (config.batch_size * context_length)))
    wanted = math.ceil(1.5 * EVAL_SHARE * config.eval_interval * config.grad_accum)
    return max(1, min(config.eval_batches, wanted))


def first_eval_is_cheap(flops_per_token: float, batches: int, batch_size: int, context_length: int) -> bool:
    """Whether an evaluation of `batches` batches per split stays under FIRST_EVAL_FLOPS (flops_per_token is the
    training count; a forward pass is a third of it)."""
    tokens = 2 * batches * batch_size * context_length
    return tokens * flops_per_token / 3 <= FIRST_EVAL_FLOPS
