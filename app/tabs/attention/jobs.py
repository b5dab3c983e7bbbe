"""What the Attention tab computes off the GUI thread, and the maps it keeps on screen.

`attention_job` runs the model once on the tokens (engine.attention_maps), prepares the overview
thumbnails and their mosaic, then the rollout: as costly as the maps at 1024 tokens, so it follows in a second event
instead of holding the maps back.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.tabs.attention.overview import mosaic, thumbnails
from engine import Event, attention_maps, attention_rollout


@dataclass(frozen=True)
class AttentionResult(Event):
    """Everything the views need for one text, computed off the GUI thread."""

    maps: np.ndarray  # [L, H, T, T]
    thumbs: np.ndarray  # [L, H + 1, t, t]
    labels: tuple[str, ...]  # axis labels, one per token
    pieces: tuple[str, ...]  # the text of each token
    truncated_from: int  # token count before cutting to the context length (0: not cut)
    mosaic: np.ndarray | None = None  # the thumbnails as one image for the overview (made here, off the GUI)


@dataclass(frozen=True)
class RolloutResult(Event):
    rollout: np.ndarray  # [T, T]


def attention_job(model: Any, tokenizer: Any, ids: list[int], truncated_from: int = 0) -> Iterator[Event]:
    """A job: the model's attention on `ids` with thumbnails, then the rollout."""
    maps = np.asarray(attention_maps(model, ids), dtype=np.float32)
    thumbs = thumbnails(maps)
    yield AttentionResult(
        maps=maps,
        thumbs=thumbs,
        mosaic=mosaic(thumbs),
        labels=tuple(tokenizer.render_token(i) for i in ids),
        pieces=tuple(tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in ids),
        truncated_from=truncated_from,
    )
    yield RolloutResult(np.asarray(attention_rollout(maps), dtype=np.float32))


@dataclass
class Maps:
    """One set of maps on screen: from a run on the text box, or one recorded training probe."""

    maps: np.ndarray
    labels: list[str]
    pieces: list[str]
    thumbs: np.ndarray
    mosaic: np.ndarray | None = None
    rollout: np.ndarray | None = None
    step: int | None = None  # the training step of a probe
    rollout_pending: bool = False  # a job is still computing it

    def get_rollout(self) -> np.ndarray | None:
        """The rollout, computed here if no job brings it (probes are short); None while pending."""
        if self.rollout is None and not self.rollout_pending:
            self.rollout = np.asarray(attention_rollout(self.maps), dtype=np.float32)
        return self.rollout
