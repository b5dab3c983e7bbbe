"""Ablation: switch parts of the model off and see what changes, for one set of parts or head by head.

- `make_ablation` builds the engine's `Ablation` (heads, whole attention layers, MLPs; zero or mean). Mean-
  ablation puts each part's mean output over the text's own positions in its place (`Decoder.ablation_means`).
- `run_ablation` compares the intact and the ablated model on a text: each token's loss, and the next-token
  distribution at every position (the top tokens of each and their probabilities under the other, and the
  KL divergence from intact to ablated).
- `run_head_sweep` ablates each head in turn (one forward per head, all through `Decoder.forward`) and ranks
  the heads by how much the text's mean token loss rises. On a model trained on the `copy` corpus the top
  heads are the ones that copy (induction heads).
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
from engine.inspect.common import losses_from_logits, progress, result_of

DEFAULT_TOP_K = 10

IdsLike = Sequence[int] | torch.Tensor | np.ndarray


def parse_head(text: str) -> tuple[int, int]:
    """"L.H" -> (layer, head), both counted from 0; a ValueError in one line otherwise."""
    layer, dot, head = text.strip().partition(".")
    if not dot or not layer.isdigit() or not head.isdigit():
        raise ValueError(f"a head is LAYER.HEAD, e.g. 0.3 (counted from 0), got {text!r}")
    return int(layer), int(head)


def make_ablation(model: nn.Module, ids: IdsLike, *, heads: Sequence[tuple[int, int]] = (),
                  attention: Sequence[int] = (), mlp: Sequence[int] = (), mean: bool = False) -> Ablation:
    """The Ablation of these parts, zeroed or (mean=True) replaced by their mean over the text's positions."""
    ablation = Ablation(heads=tuple((int(a), int(b)) for a, b in heads), attention=tuple(int(a) for a in attention),
                        mlp=tuple(int(m) for m in mlp))
    decoder = decoder_for(model)
    ablation.check(decoder.config)
    if not mean:
        return ablation
    idx = as_ids(ids, decoder.config, decoder.device)
    with torch.inference_mode():
        means = decoder.ablation_means(idx)
    return Ablation(heads=ablation.heads, attention=ablation.attention, mlp=ablation.mlp, means=means)


def describe(ablation: Ablation) -> str:
    """A short name for what an ablation switches off, e.g. "heads 0.1, 1.2 · MLP 0 (mean)"."""
    parts = []
    if ablation.heads:
        parts.append(("head " if len(ablation.heads) == 1 else "heads ")
                     + ", ".join(f"{a}.{b}" for a, b in ablation.heads))
    if ablation.attention:
        parts.append("attention " + ", ".join(str(a) for a in ablation.attention))
    if ablation.mlp:
        parts.append("MLP " + ", ".join(str(m) for m in ablation.mlp))
    text = " · ".join(parts) or "nothing"
    return text + (" (mean)" if ablation.means is not None else " (zero)")


@dataclass(frozen=True)
class AblationEffect(Event):
    """The intact and the ablated model on one text. Arrays over positions t: the next token after ids[:t+1]."""

    ids: tuple[int, ...]
    what: str  # describe(ablation)
    intact_loss: np.ndarray  # float32 [T], NaN at 0
    ablated_loss: np.ndarray  # float32 [T], NaN at 0
    intact_top_ids: np.ndarray  # int64 [T, K]: the intact model's top tokens
    intact_top_probs: np.ndarray  # float32 [T, K]
    ablated_probs_of_intact_top: np.ndarray  # float32 [T, K]: the same tokens under the ablated model
    ablated_top_ids: np.ndarray  # int64 [T, K]
    ablated_top_probs: np.ndarray  # float32 [T, K]
    intact_probs_of_ablated_top: np.ndarray  # float32 [T, K]
    kl: np.ndarray  # float32 [T]: KL(intact || ablated) of the next-token distributions, nats

    @property
    def loss_change(self) -> np.ndarray:
        """float32 [T]: ablated minus intact token loss (positive: the ablation hurt); NaN at 0."""
        return self.ablated_loss - self.intact_loss

    @property
    def mean_loss_change(self) -> float:
        change = self.loss_change[1:]
        return float(change.mean()) if change.size else 0.0


def _all_logits(decoder: Decoder, idx: torch.Tensor, ablation: Ablation | None) -> torch.Tensor:
    with torch.inference_mode():
        return decoder.forward(idx, None, ForwardOptions(logits="all", ablation=ablation)).logits[0]  # (T, V)


def run_ablation(model: nn.Module, ids: IdsLike, ablation: Ablation, top_k: int = DEFAULT_TOP_K
                 ) -> Iterator[ProgressEvent | AblationEffect]:
    """A job: the intact forward, the ablated forward, then the AblationEffect."""
    decoder = decoder_for(model)
    idx = as_ids(ids, decoder.config, decoder.device)
    ablation.check(decoder.config)
    k = max(1, min(top_k, decoder.config.vocab_size))
    yield progress("ablation", 0, 2, "running the intact model")
    intact = _all_logits(decoder, idx, None)
    yield progress("ablation", 1, 2, f"running the model without {describe(ablation)}")
    ablated = _all_logits(decoder, idx, ablation)
    with torch.inference_mode():
        lp_i, lp_a = torch.log_softmax(intact, -1), torch.log_softmax(ablated, -1)
        kl = (lp_i.exp() * (lp_i - lp_a)).sum(-1)
        top_i, ids_i = lp_i.topk(k, dim=-1)
        top_a, ids_a = lp_a.topk(k, dim=-1)
        cross_a = lp_a.gather(1, ids_i).exp()
        cross_i = lp_i.gather(1, ids_a).exp()
        numpy = [t.cpu().numpy() for t in (ids_i, top_i.exp(), cross_a, ids_a, top_a.exp(), cross_i, kl)]
        intact_loss, ablated_loss = losses_from_logits(intact, idx[0]), losses_from_logits(ablated, idx[0])
    yield AblationEffect(ids=tuple(idx[0].tolist()), what=describe(ablation), intact_loss=intact_loss,
                         ablated_loss=ablated_loss, intact_top_ids=numpy[0].astype(np.int64),
                         intact_top_probs=numpy[1], ablated_probs_of_intact_top=numpy[2],
                         ablated_top_ids=numpy[3].astype(np.int64), ablated_top_probs=numpy[4],
                         intact_probs_of_ablated_top=numpy[5], kl=numpy[6].astype(np.float32))


def ablation_effect(model: nn.Module, ids: IdsLike, ablation: Ablation, top_k: int = DEFAULT_TOP_K) -> AblationEffect:
    return result_of(run_ablation(model, ids, ablation, top_k))  # type: ignore[return-value]


@dataclass(frozen=True)
class HeadSweep(Event):
    """Each head ablated alone: how much the text's mean token loss rises."""

    ids: tuple[int, ...]
    mean: bool  # mean-ablation (else zero)
    intact_loss: float  # mean token loss of the intact model (positions 1..T-1)
    loss_change: np.ndarray  # float32 [L, H]: mean loss with that head ablated minus intact_loss

    def ranking(self) -> list[tuple[int, int, float]]:
        """(layer, head, loss change), the head whose ablation hurts most first."""
        L, H = self.loss_change.shape
        order = np.argsort(-self.loss_change, axis=None, kind="stable")
        return [(int(i // H), int(i % H), float(self.loss_change.flat[i])) for i in order]


def _mean_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:-1], idx[0, 1:])


def run_head_sweep(model: nn.Module, ids: IdsLike, mean: bool = False) -> Iterator[ProgressEvent | HeadSweep]:
    """A job: the intact forward, then one forward per head with that head ablated (a progress event
    before each, so it can be stopped between heads), then the HeadSweep. Needs at least two tokens."""
    decoder = decoder_for(model)
    config = decoder.config
    idx = as_ids(ids, config, decoder.device)
    if idx.shape[1] < 2:
        raise ValueError("a head sweep needs a text of at least two tokens (the loss of the first is undefined)")
    L, H = config.n_layers, config.n_heads
    total = L * H + 1
    yield progress("head_sweep", 0, total, "running the intact model")
    means = None
    with torch.inference_mode():
        if mean:
            means = decoder.ablation_means(idx)
        intact = _mean_loss(_all_logits(decoder, idx, None), idx)
    losses = []  # 0-d tensors, read back once at the end (no device sync per head)
    for layer in range(L):
        for head in range(H):
            yield progress("head_sweep", 1 + layer * H + head, total, f"ablating head {layer}.{head}")
            logits = _all_logits(decoder, idx, Ablation(heads=((layer, head),), means=means))
            with torch.inference_mode():
                losses.append(_mean_loss(logits, idx))
    with torch.inference_mode():
        change = (torch.stack(losses) - intact).view(L, H).float().cpu().numpy()
    yield HeadSweep(ids=tuple(idx[0].tolist()), mean=mean, intact_loss=float(intact), loss_change=change)


def head_sweep(model: nn.Module, ids: IdsLike, mean: bool = False) -> HeadSweep:
    return result_of(run_head_sweep(model, ids, mean))  # type: ignore[return-value]
