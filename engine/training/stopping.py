"""Stopping inside a step: hooks on the transformer blocks that check for a stop in every forward and backward pass.

One forward and backward pass of a 124M model over 1,024 tokens takes seconds on a laptop CPU; checking only
between micro-batches would leave Stop waiting that long. `stop_hooks(blocks, stopping)` adds a forward hook to
each block: it raises StopRequested when `stopping()` is true, and registers a gradient hook on the block's
output that does the same during the backward pass (autograd hands a hook's exception back to the caller of
backward unchanged). The trainer catches StopRequested, drops the step and rewinds its random draws. The hooks are
removed when the context ends: the model outlives the run (it becomes the app's current model).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch


class StopRequested(Exception):
    """Raised inside a forward or backward pass when a stop was asked; caught by the trainer."""


@contextlib.contextmanager
def stop_hooks(blocks: Iterable[torch.nn.Module], stopping: Callable[[], bool]) -> Iterator[None]:
    def check(*_args: Any) -> None:
        if stopping():
            raise StopRequested

    def after_forward(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        check()
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(check)  # runs when the gradient reaches this block, in the backward pass

    handles = [block.register_forward_hook(after_forward) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
