"""Turning the model's logits into the distribution the next token is drawn from.

The filters follow Hugging Face transformers' logits processors operation for operation, so that a
setting here means exactly what it means there (tests compare against them):

1. repetition penalty on the raw logits: every token already seen (prompt and output) has its logit
   multiplied by the penalty if negative, divided by it if positive (RepetitionPenaltyLogitsProcessor);
2. temperature: logits / T (TemperatureLogitsWarper);
3. top-k: drop tokens whose logit is below the k-th largest; ties with it survive (TopKLogitsWarper);
4. top-p: sort ascending, drop tokens whose cumulative probability is <= 1 - p; the most probable
   token always survives, so the token that crosses p is kept (TopPLogitsWarper);
5. min-p: drop tokens whose probability (after the filters above) is below min_p x the top token's
   probability (MinPLogitsWarper).

Greedy decoding (or temperature 0) applies only the repetition penalty, then takes the arg-max.

Every row of a batch can carry its own settings (the Generation tab runs several decoders as one
batch); a stage that no row uses costs nothing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from engine.config import strict_fields

MAX_NEW_TOKENS = 1_000_000
MAX_TEMPERATURE = 100.0
MAX_REPETITION_PENALTY = 100.0

# Names of the filters that can remove a token, as FilterStages.removed_by reports them (public through
# engine.sampling, which users' scripts import).
REMOVED_BY_TOP_K = "top_k"
REMOVED_BY_TOP_P = "top_p"
REMOVED_BY_MIN_P = "min_p"
REMOVED_BY_GREEDY = "greedy"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingConfig:
    """How one decoder picks its tokens. The neutral value of each filter turns it off:
    top_k = 0, top_p = 1, min_p = 0, repetition_penalty = 1; temperature = 0 means greedy."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 100
    seed: int | None = None  # None: a fresh random seed for each run
    stop_at_eot: bool = False  # stop a row at the tokenizer's end-of-text or end-of-turn ids
    stop_strings: tuple[str, ...] = field(default_factory=tuple)  # stop once the output contains one

    def __post_init__(self) -> None:
        if not isinstance(self.greedy, bool):
            raise ValueError(f"greedy must be true or false, got {self.greedy!r}")
        if not isinstance(self.stop_at_eot, bool):
            raise ValueError(f"stop_at_eot must be true or false, got {self.stop_at_eot!r}")
        if not _is_number(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, "
                             f"got {self.temperature!r}")
        if not _is_whole(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number, 0 (off) or more, got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be between 0 and 1 (1 = off), got {self.top_p!r}")
        if not _is_number(self.min_p) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be between 0 (off) and 1, got {self.min_p!r}")
        if (not _is_number(self.repetition_penalty)
                or not 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY):
            raise ValueError(f"repetition_penalty must be above 0 and at most {MAX_REPETITION_PENALTY:g} "
                             f"(1 = off), got {self.repetition_penalty!r}")
        if not _is_whole(self.max_new_tokens) or not 0 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be a whole number between 0 and {MAX_NEW_TOKENS:,}, "
                             f"got {self.max_new_tokens!r}")
        if self.seed is not None and (not _is_whole(self.seed) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be a whole number between 0 and 2**63 - 1, got {self.seed!r}")
        stops = self.stop_strings
        if isinstance(stops, str):
            stops = (stops,)
        if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError(f"stop_strings must be a list of non-empty strings, got {self.stop_strings!r}")
        object.__setattr__(self, "stop_strings", tuple(stops))

    @property
    def is_greedy(self) -> bool:
        """Greedy decoding: asked for, or temperature 0."""
        return self.greedy or self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop_strings"] = list(self.stop_strings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        return cls(**strict_fields(cls, data, "sampling settings"))


class RowSettings:
    """The settings of a batch's rows as tensors, built once per generation (not once per step)."""

    def __init__(self, configs: Sequence[SamplingConfig], device: torch.device | str = "cpu"):
        if not configs:
            raise ValueError("at least one sampling config is needed")
        for c in configs:
            if not isinstance(c, SamplingConfig):
                raise ValueError(f"expected a SamplingConfig, got {type(c).__name__}")
        self.configs = list(configs)

        def column(values: list[float], dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)  # (B, 1)

        greedy = [c.is_greedy for c in configs]
        self.greedy = torch.tensor(greedy, device=device)  # (B,)
        self.all_greedy = all(greedy)
        self.any_greedy = any(greedy)
        # A greedy row ignores the warpers, as transformers does with do_sample=False.
        temps = [1.0 if g else float(c.temperature) for c, g in zip(configs, greedy)]
        self.temperature = column(temps) if any(t != 1.0 for t in temps) else None
        top_k = [0 if g else c.top_k for c, g in zip(configs, greedy)]
        self.top_k = top_k if any(top_k) else None
        self._top_k_index: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}  # per vocabulary size
        # transformers compares the cumulative probability with (1 - top_p) computed in Python.
        top_p = [1.0 if g else float(c.top_p) for c, g in zip(configs, greedy)]
        if any(p < 1.0 for p in top_p):
            self.top_p_cut = column([1.0 - p for p in top_p])
            self.top_p_on = column([p < 1.0 for p in top_p], torch.bool)
        else:
            self.top_p_cut = self.top_p_on = None
        min_p = [0.0 if g else float(c.min_p) for c, g in zip(configs, greedy)]
        self.min_p = column(min_p) if any(min_p) else None
        penalty = [float(c.repetition_penalty) for c in configs]
        if any(p != 1.0 for p in penalty):
            self.penalty = column(penalty)
            self.penalty_on = column([p != 1.0 for p in penalty], torch.bool)
        else:
            self.penalty = self.penalty_on = None

    def __len__(self) -> int:
        return len(self.configs)

    def top_k_index(self, vocab: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(B, 1) index of each row's k-th value, (B, 1) rows without top-k, and the largest k."""
        if vocab not in self._top_k_index:
            k = [min(k, vocab) if k else 0 for k in self.top_k]
            index = torch.tensor([max(x, 1) - 1 for x in k], device=device).unsqueeze(1)
            off = torch.tensor([x == 0 for x in k], device=device).unsqueeze(1)
            self._top_k_index[vocab] = (index, off, max(k))
        return self._top_k_index[vocab]


def seen_mask(prev_ids: torch.Tensor | None, batch: int, vocab_size: int,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, V) bool: which tokens each row has seen (the repetition penalty's set)."""
    mask = torch.zeros(batch, vocab_size, dtype=torch.bool, device=device)
    if prev_ids is not None and prev_ids.numel():
        ids = prev_ids.to(device=device, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0).expand(batch, -1)
        if ids.shape[0] != batch:
            raise ValueError(f"prev_ids has {ids.shape[0]} rows but the logits have {batch}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"prev_ids must be token ids between 0 and {vocab_size - 1}")
        mask.scatter_(1, ids, True)
    return mask


def apply_penalty(logits: torch.Tensor, rows: RowSettings, seen: torch.Tensor | None) -> torch.Tensor:
    """Repetition penalty on raw float32 logits (a new tensor; rows with penalty 1 are unchanged)."""
    if rows.penalty is None or seen is None:
        return logits
    penalised = torch.where(logits < 0, logits * rows.penalty, logits / rows.penalty)
    return torch.where(seen & rows.penalty_on, penalised, logits)


def apply_warpers(scores: torch.Tensor, rows: RowSettings,
                  stages: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Temperature, top-k, top-p and min-p on penalised logits; filtered tokens become -inf.

    With `stages` given, the logits after each stage are stored in it (for FilterStages).
    """
    neg_inf = float("-inf")
    if rows.temperature is not None:
        scores = scores / rows.temperature
    if stages is not None:
        stages["temperature"] = scores
    if rows.top_k is not None:
        index, off, k_max = rows.top_k_index(scores.shape[-1], scores.device)
        kth = torch.topk(scores, k_max, dim=-1).values  # (B, largest k), descending
        threshold = kth.gather(1, index).masked_fill_(off, neg_inf)  # each row's k-th value
        scores = scores.masked_fill(scores < threshold, neg_inf)
    if stages is not None:
        stages["top_k"] = scores
    if rows.top_p_cut is not None:
        sorted_logits, sorted_index = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= rows.top_p_cut
        remove_sorted[:, -1] = False  # the most probable token always stays
        remove = remove_sorted.scatter(1, sorted_index, remove_sorted) & rows.top_p_on
        scores = scores.masked_fill(remove, neg_inf)
    if stages is not None:
        stages["top_p"] = scores
    if rows.min_p is not None:
        probs = scores.softmax(dim=-1)
        top = probs.amax(dim=-1, keepdim=True)
        remove = probs < rows.min_p * top
        remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
        scores = scores.masked_fill(remove, neg_inf)
    if stages is not None:
        stages["min_p"] = scores
    return scores


def greedy_probs(penalised: torch.Tensor) -> torch.Tensor:
    """One-hot distributions on each row's arg-max (what greedy decoding draws from)."""
    probs = torch.zeros_like(penalised)
    probs.scatter_(1, penalised.argmax(dim=-1, keepdim=True), 1.0)
    return probs


def probs_from_logits(logits: torch.Tensor, rows: RowSettings, seen: torch.Tensor | None) -> torch.Tensor:
    """The full pipeline for (B, V) float32 logits -> (B, V) probabilities."""
    penalised = apply_penalty(logits, rows, seen)
    if rows.all_greedy:
        return greedy_probs(penalised)
    probs = apply_warpers(penalised, rows).softmax(dim=-1)
    if rows.any_greedy:
        probs = torch.where(rows.greedy.unsqueeze(1), greedy_probs(penalised), probs)
    return probs


def next_token_probs(logits: torch.Tensor, config: SamplingConfig | Sequence[SamplingConfig],
                     prev_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The exact distribution each row's next token is drawn from.

    logits: (B, V) raw model outputs. config: one SamplingConfig for every row, or one per row.
    prev_ids: (B, T) (or (T,) for all rows) ids seen so far, prompt included, for the repetition
    penalty; None for none. Returns (B, V) float32 probabilities (one-hot for greedy rows).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {tuple(logits.shape)}")
    batch, vocab = logits.shape
    configs = [config] * batch if isinstance(config, SamplingConfig) else list(config)
    if len(configs) != batch:
        raise ValueError(f"{len(configs)} sampling configs for {batch} rows of logits")
    rows = RowSettings(configs, logits.device)
    seen = seen_mask(prev_ids, batch, vocab, logits.device) if rows.penalty is not None else None
    return probs_from_logits(logits.float(), rows, seen)


_FIRST_CANDIDATES = 64  # sample_inverse_cdf looks among this many top tokens before sorting them all


def _draw_from_sorted(sorted_probs: torch.Tensor, order: torch.Tensor, target: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, token) where the cumulative sum of sorted_probs first exceeds target (B, 1)."""
    cdf = sorted_probs.cumsum(dim=-1)
    position = torch.searchsorted(cdf, target, right=True)
    # Rounding can put the target past the last token that has any probability: take that one.
    last_nonzero = (sorted_probs > 0).sum(dim=-1, keepdim=True).clamp_(min=1) - 1
    position = torch.minimum(position, last_nonzero)
    return position, order.gather(1, position)


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from (B, V) probs with one uniform in [0, 1) per row.

    The cumulative distribution runs over tokens sorted from most to least probable (ties by id), so
    the same uniform picks "the same quantile" in every row: rows that share a seed differ only where
    their settings make them differ (u below the top token's probability always gives the top token).
    Tokens with zero probability are never drawn.

    Sorting a 50k vocabulary every step costs more than a small model's forward, so the draw first
    looks among the top 64 tokens (where almost all draws land after top-k/top-p/min-p, and most
    draws from a trained model) and sorts the whole row only when it lands beyond them.
    """
    batch, vocab = probs.shape
    target = (uniforms.to(probs.dtype) * probs.sum(dim=-1)).unsqueeze(1)  # (B, 1)
    k = min(vocab, _FIRST_CANDIDATES)
    values, index = probs.topk(k, dim=-1)  # the k most probable, ties in no particular order
    index, by_id = index.sort(dim=-1)
    values = values.gather(1, by_id)
    values, by_value = values.sort(dim=-1, descending=True, stable=True)  # by probability, ties by id
    index = index.gather(1, by_value)
    position, chosen = _draw_from_sorted(values, index, target)
    # Exact unless the draw reached tokens tied with the k-th value (some of those may lie outside).
    kth = values[:, -1:]
    exact = (values.gather(1, position) > kth) | (kth == 0) | (k == vocab)
    if not bool(exact.all()):
        rows = (~exact[:, 0]).nonzero()[:, 0]
        sorted_probs, order = torch.sort(probs[rows], dim=-1, descending=True, stable=True)
        chosen[rows] = _draw_from_sorted(sorted_probs, order, target[rows])[1]
    return chosen[:, 0]


@dataclass(frozen=True)
class FilterStages:
    """What each filter did to one next-token distribution (float32 arrays of length V).

    raw: softmax of the model's logits; penalty: after the repetition penalty; temperature, top_k,
    top_p, min_p: after each warper (a stage that is off repeats the one before); final: what the
    token is drawn from (one-hot for greedy). removed_by: for each token "" if it survived, else the
    filter that removed it ("top_k", "top_p", "min_p", or "greedy" for every non-arg-max token).
    penalised: which tokens the repetition penalty touched.
    """

    raw: np.ndarray
    penalty: np.ndarray
    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray
    min_p: np.ndarray
    final: np.ndarray
    removed_by: np.ndarray  # str array
    penalised: np.ndarray  # bool array


def filter_stages(logits: torch.Tensor | np.ndarray, config: SamplingConfig,
                  prev_ids: torch.Tensor | np.ndarray | Sequence[int] | None = None) -> FilterStages:
    """The stage-by-stage breakdown of one next-token distribution (logits of shape (V,))."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    if logits.dim() != 1:
        raise ValueError(f"logits must be one vector of length vocab, got shape {tuple(logits.shape)}")
    logits = logits.unsqueeze(0)
    vocab = logits.shape[1]
    rows = RowSettings([config])
    prev = None if prev_ids is None else torch.as_tensor(np.asarray(prev_ids, dtype=np.int64)).reshape(1, -1)
    seen = seen_mask(prev, 1, vocab)
    penalised = apply_penalty(logits, rows, seen)
    stages: dict[str, torch.Tensor] = {}
    if config.is_greedy:
        for name in ("temperature", "top_k", "top_p", "min_p"):
            stages[name] = penalised
        final = greedy_probs(penalised)
    else:
        final = apply_warpers(penalised, rows, stages).softmax(dim=-1)

    removed_by = np.full(vocab, "", dtype="<U6")
    if config.is_greedy:
        removed_by[final[0].numpy() == 0] = REMOVED_BY_GREEDY
    else:
        # A stage removes exactly the tokens it turned to -inf that were finite before it.
        before = stages["temperature"]
        for name in (REMOVED_BY_TOP_K, REMOVED_BY_TOP_P, REMOVED_BY_MIN_P):  # also the stages' names
            after = stages[name]
            newly = (torch.isinf(after) & ~torch.isinf(before))[0].numpy()
            removed_by[newly] = name
            before = after

    def probs(t: torch.Tensor) -> np.ndarray:
        return t.softmax(dim=-1)[0].numpy().astype(np.float32)

    if rows.penalty_on is not None:
        touched = (seen & rows.penalty_on)[0].numpy()
    else:
        touched = np.zeros(vocab, dtype=bool)
    return FilterStages(
        raw=probs(logits), penalty=probs(penalised), temperature=probs(stages["temperature"]),
        top_k=probs(stages["top_k"]), top_p=probs(stages["top_p"]), min_p=probs(stages["min_p"]),
        final=final[0].numpy().astype(np.float32), removed_by=removed_by, penalised=touched,
    )
