"""How far a lower precision drifts from fp32: greedy agreement over a teacher-forced text."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from engine.generation.capture import ForwardOptions
from engine.generation.forward import decoder_for
from engine.generation.precision import model_device
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import generate, prompt_token_ids


@dataclass(frozen=True)
class AgreementReport:
    """How closely greedy decoding in a precision follows fp32.

    teacher_forced: fraction of positions of the text (the prompt, then fp32's own greedy
    continuation) where the precision's next-token arg-max equals fp32's: the per-step agreement,
    independent of earlier steps.
    first_divergence: index of the first new token where free-running greedy outputs differ
    (n_tokens if never). free_run_match: fraction of new tokens equal in the two free runs.
    """

    precision: str
    n_tokens: int
    teacher_forced: float
    first_divergence: int
    free_run_match: float


def greedy_agreement(model: nn.Module, tokenizer, prompt: str, precision: str,
                     n_tokens: int = 256) -> AgreementReport:
    """Compare greedy generation in `precision` with fp32 over n_tokens new tokens."""
    config = SamplingConfig(greedy=True, max_new_tokens=n_tokens)
    reference = generate(model, tokenizer, prompt, config, precision="fp32")
    other = generate(model, tokenizer, prompt, config, precision=precision)
    a, b = reference.ids, other.ids
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    free = sum(x == y for x, y in zip(a, b)) / max(1, len(a))

    # Teacher forcing: feed the text to both, window by window, and compare arg-maxes everywhere.
    context = model.config.context_length
    ids = torch.tensor(prompt_token_ids(tokenizer, prompt, model.config) + a, device=model_device(model))
    decoders = decoder_for(model, "fp32"), decoder_for(model, precision)
    every_position = ForwardOptions(logits="all")
    same = total = 0
    with torch.inference_mode():
        for begin in range(0, len(ids), context):
            idx = ids[begin:begin + context].unsqueeze(0)
            ref, other = (d.forward(idx, None, every_position).logits for d in decoders)
            same += int((ref[0].argmax(-1) == other[0].argmax(-1)).sum())
            total += idx.shape[1]
    return AgreementReport(precision=precision, n_tokens=len(a), teacher_forced=same / total,
                           first_divergence=first, free_run_match=free)

