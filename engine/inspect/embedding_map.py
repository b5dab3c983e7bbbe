"""The embedding map: a 2-D PCA of the token embedding table, and a text's residual stream on the same axes.

The axes are the table's first two principal components (the eigenvectors of its covariance, C x C, so a
50,257-token table costs one C x C eigen-decomposition). Every token of the vocabulary becomes a point;
tokens the model treats alike end up near each other. The residual stream of a text is projected on the
same axes, layer by layer: layer 0 is the text's token embeddings (each token exactly on its point of the
table), layer l > 0 the output of block l - 1. Later layers drift away from the table and grow in scale:
the map shows where the stream heads, not a fit of each layer of its own.

An eigenvector's sign is arbitrary. Each axis is turned so that its largest loading is positive, or, given
the axes of an earlier map (`reference`, e.g. the previous training probe), so that it points the same way
as that one: maps of successive probes then do not flip.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from engine.events import Event
from engine.generation.capture import ForwardOptions
from engine.generation.forward import as_ids, decoder_for


@dataclass(frozen=True)
class EmbeddingMap(Event):
    points: np.ndarray  # float32 [V, 2]: every token's embedding on the two axes
    explained: np.ndarray  # float32 [2]: fraction of the table's variance along each axis
    axes: np.ndarray  # float32 [2, C]: the principal directions
    center: np.ndarray  # float32 [C]: the table's mean, subtracted before projecting
    ids: tuple[int, ...] = ()  # the text, if one was given
    stream: np.ndarray | None = None  # float32 [n_layers + 1, T, 2]: the text's residual stream per layer


def _principal_axes(table: torch.Tensor, reference: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, C) directions of largest variance of a (V, C) table, and their share of the variance."""
    centered = table - table.mean(0)
    cov = centered.T @ centered / max(1, table.shape[0] - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    axes = vectors[:, -2:].flip(1).T.contiguous()  # (2, C), largest first
    if reference is not None and reference.shape == tuple(axes.shape):
        signs = torch.sign((axes * torch.as_tensor(reference, dtype=axes.dtype, device=axes.device)).sum(1))
    else:
        signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)).squeeze(1))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(1)
    total = values.clamp(min=0).sum()
    explained = values.flip(0)[:2].clamp(min=0) / total if total > 0 else torch.zeros(2, dtype=values.dtype)
    return axes, explained


def embedding_map(model: nn.Module, ids: Sequence[int] | torch.Tensor | np.ndarray | None = None,
                  reference: np.ndarray | None = None) -> EmbeddingMap:
    """The table's PCA map; with ids, also their residual stream per layer on the same axes.
    `reference`: the axes of an earlier map, to keep the signs (see the module docstring)."""
    decoder = decoder_for(model)
    config = decoder.config
    if config.vocab_size < 2:
        raise ValueError("an embedding map needs a vocabulary of at least two tokens")
    with torch.inference_mode():
        vocab = torch.arange(config.vocab_size, device=decoder.device).unsqueeze(0)
        table = decoder.token_embeddings(vocab)[0].double()  # float64: the covariance of a big table
        axes, explained = _principal_axes(table, reference)
        center = table.mean(0)
        points = (table - center) @ axes.T
        stream, text = None, ()
        if ids is not None:
            idx = as_ids(ids, config, decoder.device)
            out = decoder.forward(idx, None, ForwardOptions(logits="none", capture_residuals=True))
            layers = [decoder.token_embeddings(idx)[0]] + [r[0] for r in out.residuals]
            stream = torch.stack([(x.double() - center) @ axes.T for x in layers]).float().cpu().numpy()
            text = tuple(idx[0].tolist())
    return EmbeddingMap(points=points.float().cpu().numpy(), explained=explained.float().cpu().numpy(),
                        axes=axes.float().cpu().numpy(), center=center.float().cpu().numpy(), ids=text, stream=stream)
