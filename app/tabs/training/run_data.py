"""The numbers behind the training plots: growing numpy buffers per run, and loss smoothing.

Nothing here touches Qt, so it is cheap to test and safe to fill from event batches; the plot
widget reads the arrays from a timer.
"""
from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import atomic_write_text


class Series:
    """A float64 array that grows by amortised doubling; `view()` is the filled part (no copy)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._data = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, value: float) -> None:
        if self._n == len(self._data):
            grown = np.empty(2 * len(self._data), dtype=np.float64)
            grown[: self._n] = self._data
            self._data = grown
        self._data[self._n] = value
        self._n += 1

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.append(v)

    def view(self) -> np.ndarray:
        return self._data[: self._n]


class DebiasedEMA:
    """TensorBoard's smoothing: an exponential moving average divided by (1 - weight**n), so the
    first points are not pulled toward zero. Computed incrementally as points arrive."""

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)
        self.out = Series()
        self._last = 0.0
        self._count = 0

    def update(self, values: np.ndarray) -> np.ndarray:
        """Smooth the new tail of `values` (everything past what was seen before) and return all."""
        w = self.weight
        for v in values[len(self.out):]:
            if math.isfinite(v):
                self._last = self._last * w + (1.0 - w) * v
                self._count += 1
            debias = 1.0 - w ** self._count if w < 1.0 else 1.0
            self.out.append(self._last / debias if self._count and debias > 0 else float(v))
        return self.out.view()


def smooth(values: Iterable[float], weight: float) -> np.ndarray:
    """The debiased EMA of a whole sequence (weight 0 = no smoothing)."""
    return DebiasedEMA(weight).update(np.asarray(list(values), dtype=np.float64)).copy()


@dataclass
class RunData:
    """One training run's curves: train series per optimizer step, validation series per eval.

    Runs read from a checkpoint's history have no times (the history keeps none): their wall and relative
    times are NaN, so they show on the step and token axes only."""

    name: str
    color: str
    visible: bool = True
    from_file: bool = False  # read from a saved history (from_history), not recorded live
    step: Series = field(default_factory=Series)
    loss: Series = field(default_factory=Series)
    lr: Series = field(default_factory=Series)
    tokens_seen: Series = field(default_factory=Series)
    tokens_per_s: Series = field(default_factory=Series)
    grad_norm: Series = field(default_factory=Series)
    elapsed_s: Series = field(default_factory=Series)
    wall_time: Series = field(default_factory=Series)
    val_step: Series = field(default_factory=Series)
    val_loss: Series = field(default_factory=Series)
    val_tokens_seen: Series = field(default_factory=Series)
    version: int = 0  # bumped on every change, so the plot redraws only what changed

    def add_step(self, step: int, loss: float, lr: float, tokens_seen: int, tokens_per_s: float, *,
                 grad_norm: float = math.nan, elapsed_s: float = math.nan, wall_time: float | None = None) -> None:
        """One optimizer step; wall_time defaults to now (the step has just been reported)."""
        self.step.append(step)
        self.loss.append(loss)
        self.lr.append(lr)
        self.tokens_seen.append(tokens_seen)
        self.tokens_per_s.append(tokens_per_s)
        self.grad_norm.append(grad_norm)
        self.elapsed_s.append(elapsed_s)
        self.wall_time.append(time.time() if wall_time is None else wall_time)
        self.version += 1

    def add_eval(self, step: int, val_loss: float, tokens_seen: int) -> None:
        self.val_step.append(step)
        self.val_loss.append(val_loss)
        self.val_tokens_seen.append(tokens_seen)
        self.version += 1

    @property
    def num_steps(self) -> int:
        return len(self.step)

    def x(self, mode: str) -> np.ndarray:
        """The x value of every step for an x-axis mode: "step", "tokens", "wall" (seconds since the epoch when
        the step was reported) or "relative" (the trainer's time spent training, as TensorBoard's relative)."""
        return {"step": self.step, "tokens": self.tokens_seen, "wall": self.wall_time,
                "relative": self.elapsed_s}[mode].view()

    def val_x(self, mode: str) -> np.ndarray:
        """The x value of every evaluation. Evaluations carry no time of their own: they take the time of the
        step they follow (the first step's for the evaluation before training)."""
        if mode == "step":
            return self.val_step.view()
        if mode == "tokens":
            return self.val_tokens_seen.view()
        if not self.num_steps:
            return np.full(len(self.val_step), math.nan)
        return np.interp(self.val_step.view(), self.step.view(), self.x(mode))

    def same_curves(self, other: RunData) -> bool:
        """True when both hold the same steps and losses (one run reached twice, e.g. a checkpoint reopened)."""
        return (self.num_steps == other.num_steps and len(self.val_step) == len(other.val_step)
                and np.array_equal(self.step.view(), other.step.view())
                and np.array_equal(self.loss.view(), other.loss.view(), equal_nan=True)
                and np.array_equal(self.val_loss.view(), other.val_loss.view(), equal_nan=True))

    @classmethod
    def from_history(cls, name: str, color: str, history: dict[str, Any]) -> RunData:
        """A run from a checkpoint's train_state["history"] (lists of equal length per group)."""
        run = cls(name, color, from_file=True)

        def col(key: str, n: int, default: float = math.nan) -> list[float]:
            values = history.get(key) or []
            values = [float(v) if v is not None else math.nan for v in values]
            return (values + [default] * n)[:n]

        n = len(history.get("step") or [])
        for s, lo, lr, tok, tps, gn, el in zip(col("step", n), col("loss", n), col("lr", n), col("tokens_seen", n),
                                               col("tokens_per_s", n), col("grad_norm", n), col("elapsed_s", n)):
            if math.isfinite(s):  # a step without a number cannot be placed on the axis
                run.add_step(int(s), lo, lr, tok, tps, grad_norm=gn, elapsed_s=el, wall_time=math.nan)
        m = len(history.get("val_step") or [])
        for s, v, tok in zip(col("val_step", m), col("val_loss", m), col("val_tokens_seen", m)):
            if math.isfinite(s):
                run.add_eval(int(s), v, tok)
        return run

    def to_history(self) -> dict[str, list[float]]:
        return {
            "step": [int(s) for s in self.step.view()],
            "loss": self.loss.view().tolist(),
            "lr": self.lr.view().tolist(),
            "tokens_seen": [int(t) for t in self.tokens_seen.view()],
            "tokens_per_s": self.tokens_per_s.view().tolist(),
            "grad_norm": _finite_or_none(self.grad_norm.view()),
            "elapsed_s": _finite_or_none(self.elapsed_s.view()),
            "val_step": [int(s) for s in self.val_step.view()],
            "val_loss": self.val_loss.view().tolist(),
            "val_tokens_seen": [int(t) for t in self.val_tokens_seen.view()],
        }


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


CSV_COLUMNS = ["run", "step", "tokens_seen", "train_loss", "train_loss_smoothed", "lr", "tokens_per_s", "val_loss",
               "grad_norm", "elapsed_s"]


def write_csv(path: str | Path, runs: list[RunData], smoothing: float) -> None:
    """All runs in one long table: a row per optimizer step, validation loss on the steps that had one.
    Written atomically: a failure leaves an existing file as it was."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        smoothed = smooth(run.loss.view(), smoothing)
        val = {int(s): (v, int(t)) for s, v, t in
               zip(run.val_step.view(), run.val_loss.view(), run.val_tokens_seen.view())}
        rows: dict[int, list[Any]] = {}
        for i, s in enumerate(run.step.view()):
            s = int(s)
            rows[s] = [run.name, s, int(run.tokens_seen.view()[i]), _fmt(run.loss.view()[i]), _fmt(smoothed[i]),
                       _fmt(run.lr.view()[i]), _fmt(run.tokens_per_s.view()[i]), "",
                       _fmt(run.grad_norm.view()[i]), _fmt(run.elapsed_s.view()[i])]
        for s, (v, t) in val.items():
            rows.setdefault(s, [run.name, s, t, "", "", "", "", "", "", ""])[7] = _fmt(v)
        for s in sorted(rows):
            writer.writerow(rows[s])
    atomic_write_text(path, out.getvalue())


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"
