"""Will a training run fit in memory? An estimate made before anything is allocated, and one line when not.

Without it, a run that cannot fit ends in a traceback from the allocator, after the model was built (or
the machine swaps itself to a halt). `check_training_memory` compares an estimate with the memory the
device has left and refuses with one line saying how to fit; `is_out_of_memory` recognises the
allocator's own failures (PyTorch's "DefaultCPUAllocator: can't allocate memory", MemoryError, CUDA
out of memory) so they are reported in one line too.

The estimate, in bytes, for fp32 training with AdamW (weights, gradients, two moments: 16 per parameter)
plus the activations autograd keeps for one micro-batch of B sequences of T tokens:
    4 * B * T * (20 * emb_dim * n_layers + 4 * vocab_size + 0.35 * n_heads * T * n_layers)
(about 20 floats per token and layer, the logits and their softmax, and what attention keeps). Fitted to
the peak memory of real runs on a CPU (`tiny`, `small`, a GPT-2-vocabulary and a 1,024-context model,
within 10%). Mixed precision keeps its activations in 16 bits (x0.7) but adds a 16-bit copy of the weights.
"""
from __future__ import annotations

import os

import torch

from engine.config import ModelConfig, TrainConfig

OOM_HINT = "try a smaller batch size or context length, gradient accumulation, bf16, or a smaller model"
_ALLOCATOR_FAILURES = ("can't allocate memory", "DefaultCPUAllocator", "out of memory", "not enough memory")


class OutOfMemory(ValueError):
    """A run that cannot fit in memory, or an allocation that failed: the message is one line."""


def training_memory_parts(config: ModelConfig, train: TrainConfig) -> dict[str, int]:
    """The estimate's parts in bytes: weights (fp32, plus a 16-bit copy under mixed precision), gradients,
    optimizer (AdamW's two moments) and activations (one micro-batch of batch_size x context_length)."""
    params = config.num_params()
    b, t = train.batch_size, config.context_length
    per_token = 20 * config.emb_dim * config.n_layers + 4 * config.vocab_size + 0.35 * config.n_heads * t * config.n_layers
    activations = 4 * b * t * per_token
    weights = 4 * params
    if train.precision in ("bf16", "fp16"):
        activations *= 0.7
        weights += 2 * params
    return {"weights": int(weights), "gradients": 4 * params, "optimizer": 8 * params,
            "activations": int(activations)}


def training_memory_bytes(config: ModelConfig, train: TrainConfig) -> int:
    """Estimated peak memory of training `config` with `train`'s batch, precision and optimizer."""
    return sum(training_memory_parts(config, train).values())


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on `device`, or None when it cannot be told."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            # What this process's caching allocator holds but does not use is available to it as well.
            return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    limit = _cgroup_room()
    if available is None:
        return limit
    return available if limit is None else min(available, limit)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Room left under a container's memory limit (cgroup v2), if there is one."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def training_memory_problem(config: ModelConfig, train: TrainConfig, device: torch.device,
                            have: int | None = None) -> str | None:
    """One line saying the run cannot fit in `device`'s free memory (`have`: measured here when None) and how
    to fit it; None when it fits or the free memory cannot be told."""
    need = training_memory_bytes(config, train)
    have = available_memory_bytes(device) if have is None else have
    if have is None or need <= have:
        return None
    where = "GPU" if device.type == "cuda" else "memory"
    return f"this run needs about {_gb(need)} of {where} but only {_gb(have)} is free: {OOM_HINT}"


def check_training_memory(config: ModelConfig, train: TrainConfig, device: torch.device) -> None:
    """Raise OutOfMemory (one line, with what would fit) when the run cannot fit in `device`'s memory."""
    problem = training_memory_problem(config, train, device)
    if problem is not None:
        raise OutOfMemory(problem)


def is_out_of_memory(error: BaseException) -> bool:
    """True for the allocator's failures: MemoryError, CUDA out of memory, a CPU allocation refused."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _ALLOCATOR_FAILURES)


def out_of_memory_message(error: BaseException, what: str = "the run") -> str:
    """One line for an allocator failure."""
    where = "GPU" if isinstance(error, torch.cuda.OutOfMemoryError) else "memory"
    return f"out of {where}: {what} could not allocate what it needs ({OOM_HINT})"
