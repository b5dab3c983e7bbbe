"""Compiled static-cache decoding: the decode step at a fixed shape, compiled once with torch.compile.

Why: at batch 1 a decode step is a few dozen small kernels per layer. On a GPU, launching them from
Python costs more than running them, so eager decoding leaves the GPU mostly idle. A step whose shapes
never change can be captured as a CUDA graph and replayed with one launch (gpt-fast's recipe):
`torch.compile(mode="reduce-overhead")` does the capture on CUDA. On a CPU the same code compiles
with inductor's C++ backend (there are no CUDA graphs there, so the mode only compiles).

The fixed shape (see `Decoder.step`, the step itself, next to the Decoder's other loop):
- the KV cache is preallocated to context_length (engine.model.KVCache), owned by the compiled step
  and zeroed once; the prompt and the sliding window's re-fed half are run by the eager
  `Decoder.forward` into that same cache (prefill stays eager: its length changes every time);
- one token per row; the position is a 1-element tensor the step reads, never a Python int;
- keys and values are written with index_copy_ at that position, and attention reads the whole
  cache under an additive mask computed from the position (0 where arange(context) <= pos).

Exactness: the same maths as the eager step; only float rounding differs (fused kernels, attention
over the masked full cache), far below what changes a token in practice. The tests check that the
tokens are identical, greedy and sampled, across sliding-window refills and with batched columns.

Compiled once per (model shape, precision, batch size): the step functions are copies of one function
with a code object per such key (dynamo keeps compiled versions per code object, with a limit of 8),
and the weights are inputs of the compiled graph, not constants, so a retrained or reloaded model of
the same shape reuses the compiled step (on CUDA the graph is re-recorded, which is quick).

When: by default on CUDA; on a CPU only when asked (`compile=True`, `generate --compile`). Measured on
the 2-core development CPU (see README, `bench generate --compile`), the compiled step is no faster than
the eager one there: the matmuls are the same BLAS calls, and the eager loop's Python overhead is small
next to them, while the first compile costs tens of seconds (minutes on a busy machine).
"""
from __future__ import annotations

import time
import types
from collections import OrderedDict

import torch

from engine.generation.forward import Decoder
from engine.model import KVCache

STEPS_PER_DECODER = 2  # compiled steps (each with its KV cache) kept per Decoder, by batch size
_WARM_UP_CALLS = 3  # on CUDA: a warm-up run, the CUDA graph's recording, then a replay


def compile_by_default(device: torch.device | str) -> bool:
    """Whether generation compiles its decode step when not told: on CUDA only (see the module docstring)."""
    return torch.device(device).type == "cuda"


def compile_problem(decoder: Decoder) -> str | None:
    """Why this decoder's step cannot be compiled, or None if it can."""
    if decoder.quantized:
        return "int8 (dynamic quantization) cannot be compiled; use fp32 or bf16 with --compile"
    scaling = getattr(decoder.config, "rope_scaling", None)
    if scaling is not None and scaling.rope_type == "dynamic":
        return "dynamic rope scaling changes the frequencies with the length, so its decode step cannot be compiled"
    if decoder.device.type not in ("cpu", "cuda"):
        return f"compiled decoding runs on CUDA and on the CPU, not on {decoder.device.type}"
    return None


def use_compiled(decoder: Decoder, compile: bool | None) -> bool:
    """Resolve a `compile` argument: None = the device's default (quietly eager where it cannot compile),
    True = compile or raise a ValueError saying why not, False = eager."""
    if compile is None:
        return compile_by_default(decoder.device) and compile_problem(decoder) is None
    if compile:
        problem = compile_problem(decoder)
        if problem:
            raise ValueError(problem)
    return bool(compile)


def _step(decoder: Decoder, cache: KVCache, positions: torch.Tensor, ids: torch.Tensor, pos: torch.Tensor
          ) -> torch.Tensor:
    return decoder.step(ids, pos, cache, positions)


_functions: dict[tuple, object] = {}


def _compiled_function(key: tuple):
    """torch.compile of a copy of _step with its own code object, one per (shape, precision, device, batch)."""
    fn = _functions.get(key)
    if fn is None:
        copy = types.FunctionType(_step.__code__.replace(), _step.__globals__, _step.__name__)
        fn = _functions[key] = torch.compile(copy, mode="reduce-overhead", dynamic=False, fullgraph=True)
    return fn


def _tensors(obj, seen: set[int]) -> list[torch.Tensor]:
    """Every tensor an inference object holds (attributes, slots, lists), for mark_static_address."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item, seen)]
    if not type(obj).__module__.startswith("engine.generation"):
        return []
    names = list(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        names += [n for n in getattr(cls, "__slots__", ()) if hasattr(obj, n)]
    return [t for name in names for t in _tensors(getattr(obj, name), seen)]


class CompiledStep:
    """The compiled decode step of one Decoder at one batch size, with its own zeroed KV cache.

    Call `warm_up()` once (it compiles; slow the first time for a shape), run the prompt with
    `decoder.forward(ids, step.cache)`, then `step(ids, position)` for each new token (ids (B, 1);
    position: where that token goes), advancing `cache.pos` yourself. Call it under inference_mode.
    On CUDA the returned logits live in the CUDA graph's memory: use them before the next call.
    """

    def __init__(self, decoder: Decoder, batch: int):
        self.decoder, self.batch = decoder, batch
        config = decoder.config
        with torch.inference_mode():
            self.cache = decoder.new_cache(batch, capacity=config.context_length)  # fixed size: never grows
            for t in (*self.cache.keys, *self.cache.values):
                t.zero_()  # entries past the position are masked, and must be finite for that (see Decoder.step)
            self.positions = torch.arange(config.context_length, device=decoder.device)
            self.pos = torch.zeros(1, dtype=torch.long, device=decoder.device)
        self._fn = _compiled_function((config, decoder.dtype, str(decoder.device), batch))
        self.ready = False
        self.compile_seconds = 0.0

    def warm_up(self) -> float:
        """Compile and capture the step (fast when this shape was compiled before); returns the seconds it took.
        Writes garbage at position 0 of the cache: run the prompt afterwards."""
        start = time.perf_counter()
        with torch.inference_mode():
            ids = torch.zeros(self.batch, 1, dtype=torch.long, device=self.decoder.device)
            # One eager step first: it makes the CPU decode layouts of the weights (_Linear), so the
            # compiled graph reads them as inputs rather than building them at every call.
            self.decoder.step(ids, self.pos, self.cache, self.positions)
            # Weights, cache and position never move: CUDA graphs may read them in place, uncopied.
            for t in (*_tensors(self.decoder, set()), *self.cache.keys, *self.cache.values, self.positions,
                      self.pos):
                torch._dynamo.mark_static_address(t)
            for _ in range(_WARM_UP_CALLS):
                self(ids, 0)
        if self.decoder.device.type == "cuda":
            torch.cuda.synchronize(self.decoder.device)
        self.ready = True
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def __call__(self, ids: torch.Tensor, position: int) -> torch.Tensor:
        """ids (B, 1) at `position` -> float32 logits (B, V); writes that position of the cache."""
        self.pos.fill_(position)
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are no longer needed
        return self._fn(self.decoder, self.cache, self.positions, ids, self.pos)


def compiled_step_for(decoder: Decoder, batch: int) -> CompiledStep:
    """The decoder's compiled step for a batch size (kept on the decoder, the latest few batch sizes)."""
    steps: OrderedDict[int, CompiledStep] = decoder.__dict__.setdefault("compiled_steps", OrderedDict())
    step = steps.pop(batch, None) or CompiledStep(decoder, batch)
    steps[batch] = step
    while len(steps) > STEPS_PER_DECODER:
        steps.popitem(last=False)
    return step
