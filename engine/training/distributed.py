"""Training on many processes: `torchrun --nproc_per_node=N -m engine train ...` (DDP, or FSDP2 with --fsdp).

torchrun starts one process per GPU (or CPU worker) and tells each who it is through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). `run()` joins them into a process group (NCCL on
CUDA, gloo on CPU) and hands a `DistContext` to the training code, which the Trainer uses like this:

- Batches: every rank draws the *same* global batch (batch_size x world_size rows, one shared generator)
  and keeps its own slice. Ranks never see the same rows, and the union of their batches is exactly what a
  single process with batch_size x world_size draws: N ranks reproduce a one-process run (and a checkpoint
  resumes exactly under another number of ranks with the same global batch).
- Gradients: DDP all-reduces them (once per optimizer step: `no_sync` on all but the last micro-batch);
  FSDP2 (`fully_shard` per block, then the whole model) shards parameters, gradients and optimizer state.
- Metrics: the logged loss and the evaluation losses are averaged over ranks; a stop asked on any rank
  (Ctrl-C reaches all of them through torchrun) stops every rank after the same step.
- Output: every rank runs the same loop (evaluation and samples too: under FSDP a forward pass needs every
  rank), but only rank 0 prints and writes. Saving gathers a full, unsharded state dict on rank 0 and writes
  it through engine.checkpoint, so the file has plain parameter names and opens like any other.

Failures: a process that dies makes torchrun stop the others at once; a process that hangs makes the
others' collectives fail after `timeout_s` (the process-group timeout), so nothing waits forever.
Distributed errors become one-line `DistributedError`s (an OSError, so the CLI prints `error: ...`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.checkpoint import load_optimizer_state, optimizer_state_by_name
from engine.checkpoint import save_checkpoint as _save_checkpoint
from engine.model import GPT

# Long enough for a checkpoint save or a torch.compile on one rank, short enough to notice a hang.
DEFAULT_TIMEOUT_S = 300
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


class DistributedError(ConnectionError):
    """Joining or talking to the other processes failed; the message is one line for the user."""


# ---------------------------------------------------------------- who am I

def launched_by_torchrun(env: dict[str, str] | None = None) -> bool:
    """True in a process started by torchrun (it sets RANK, LOCAL_RANK and WORLD_SIZE)."""
    env = os.environ if env is None else env
    return all(name in env for name in TORCHRUN_ENV)


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, or when not distributed: the one process that prints and writes files."""
    return rank() == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"the environment variable {name}={value!r} is not a number; "
                               "start distributed training with torchrun") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------- the data each rank trains on

class RankBatches:
    """A Dataset whose batches are this rank's slice of one global batch.

    Every rank asks the wrapped dataset for batch_size x world_size rows with the same generator state, so
    all ranks agree on the global batch without talking, and rank r keeps rows [r*B, (r+1)*B). Drawing the
    global rows costs each rank world_size x the (tiny) token ids of its own batch; the activations, which
    are what costs, are only computed for its own rows. Everything else is the wrapped dataset's.
    """

    def __init__(self, dataset: Any, rank: int, world_size: int):
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def get_batch(self, split: str, batch_size: int, context_length: int,
                  generator: torch.Generator | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset.get_batch(split, batch_size * self.world_size, context_length, generator, "cpu")
        rows = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        x, y = x[rows].contiguous(), y[rows].contiguous()  # (B, T) each
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


# ---------------------------------------------------------------- the context the Trainer uses

@dataclass
class DistContext:
    """This process's place in a torchrun job and the few distributed operations training needs."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # "nccl" or "gloo"
    fsdp: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check(self, train_config: Any) -> None:
        """Refuse settings this job cannot run correctly."""
        if self.fsdp and train_config.precision == "fp16":
            # GradScaler decides per rank whether to skip a step; with sharded gradients the ranks could
            # disagree and drift apart. bf16 needs no loss scaling.
            raise ValueError("--fsdp with fp16 is not supported (loss scaling is per rank); use bf16 or fp32")

    # -------- data

    def shard_dataset(self, dataset: Any) -> RankBatches:
        return RankBatches(dataset, self.rank, self.world_size)

    # -------- model

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP: shard every block, then the rest (embeddings, final norm, tied head), in place.

        Must run before the optimizer is built (fully_shard replaces the parameters). A no-op for DDP."""
        if not self.fsdp:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        # The root's parameters are needed again right away by backward: keep them gathered after forward.
        fully_shard(model, mesh=mesh, reshard_after_forward=False)
        return model

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module the training forward pass goes through: DDP around it (FSDP is already in place)."""
        if self.fsdp:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Constructing DDP broadcasts rank 0's weights, so every rank starts from the same model.
        return DDP(module, device_ids=device_ids, gradient_as_bucket_view=True)

    @staticmethod
    def set_grad_sync(module: torch.nn.Module, enabled: bool) -> None:
        """DDP: all-reduce gradients in this micro-batch's backward or not (grad accumulation syncs only the
        last one, as DDP.no_sync does). FSDP reduce-scatters every micro-batch, which keeps gradients sharded."""
        if hasattr(module, "require_backward_grad_sync"):
            module.require_backward_grad_sync = enabled

    # -------- reductions

    def mean_and_any(self, value: torch.Tensor, flag: bool) -> tuple[torch.Tensor, bool]:
        """The mean of a scalar over all ranks and whether `flag` is set on any rank: one all-reduce."""
        packed = torch.stack([value.detach().float().reshape(()),
                              torch.tensor(float(flag), device=value.device)])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)  # gloo has no AVG
        mean, count = packed[0] / self.world_size, packed[1]
        return mean, bool(count.item() > 0)

    def mean_values(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Means over ranks of a few scalars (e.g. evaluation losses), in one all-reduce."""
        names = list(values)
        packed = torch.stack([values[n].detach().float().reshape(()) for n in names])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed = packed / self.world_size
        return {n: packed[i] for i, n in enumerate(names)}

    @staticmethod
    def full(value: torch.Tensor) -> torch.Tensor:
        """A plain tensor from a DTensor (FSDP's gradient norm); other tensors unchanged."""
        return value.full_tensor() if hasattr(value, "full_tensor") else value

    def seed_dropout(self, seed: int, step: int) -> None:
        """Give each rank its own dropout masks, derived from (seed, step, rank) so that a resumed run
        draws the same masks as an uninterrupted one. One process keeps torch's stream untouched."""
        if self.world_size > 1:
            torch.manual_seed(((seed * 1_000_003 + step) * 1_009 + self.rank) % 2**63)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    # -------- checkpoints

    def save_checkpoint(self, path: str | os.PathLike, model: torch.nn.Module, tokenizer: Any, *,
                        train_state: dict[str, Any] | None = None,
                        optimizer: torch.optim.Optimizer | None = None) -> None:
        """Every rank calls this; rank 0 alone writes (atomically, through engine.checkpoint).

        DDP: every rank holds the whole model and optimizer, so rank 0 saves its own. FSDP: the shards are
        gathered into a full state dict on rank 0's CPU first, and saved from a plain GPT, so the file has
        the usual names and opens like any other (in the app, or to resume with or without --fsdp).
        """
        if not self.fsdp:
            if self.is_main:
                _save_checkpoint(path, model, tokenizer, train_state=train_state, optimizer=optimizer)
            self.barrier()
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # Collectives: every rank takes part; with cpu_offload only rank 0 keeps the values.
        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        optimizer_state = self._full_optimizer_state(optimizer, model) if optimizer is not None else None
        if self.is_main:
            plain = self._plain_model(model.config, weights)
            plain_optimizer = None
            if optimizer_state is not None:
                # Hyperparameters here are placeholders: the saved groups' settings replace them.
                plain_optimizer = plain.configure_optimizer(1e-3, 0.0, (0.9, 0.999), "cpu")
                load_optimizer_state(plain_optimizer, plain, optimizer_state)
            _save_checkpoint(path, plain, tokenizer, train_state=train_state, optimizer=plain_optimizer)
        self.barrier()

    def _full_optimizer_state(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module
                              ) -> dict[str, Any] | None:
        """The optimizer state by parameter name with every shard gathered (on rank 0; None elsewhere).

        Each rank walks the same parameters in the same order, so the all-gathers line up."""
        by_name = optimizer_state_by_name(optimizer, model)
        for entries in by_name["state"].values():
            for key, value in list(entries.items()):
                if hasattr(value, "full_tensor"):
                    value = value.full_tensor()
                entries[key] = value.detach().cpu() if self.is_main else None
        return by_name if self.is_main else None

    def full_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP: a plain GPT with every shard gathered, on every rank's device (a collective: every rank
        calls it). Samples and attention probes read it, as engine.generation reads any model. DDP: the
        model itself (every rank holds all of it)."""
        if not self.fsdp:
            return model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return self._plain_model(model.config, weights).eval()

    @staticmethod
    def _plain_model(config: Any, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A plain GPT holding a full state dict, built without a throwaway random initialisation."""
        with torch.device("meta"):
            plain = GPT(config)
        plain.load_state_dict(weights, assign=True)
        plain.tie_weights()  # assign=True broke the tie; restore it
        return plain

    def shard_optimizer_state(self, saved: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        """A checkpoint's (full, name-keyed) optimizer state cut to this rank's shards (FSDP), so
        engine.checkpoint.load_optimizer_state can put it into the sharded optimizer. DDP: unchanged."""
        if not self.fsdp:
            return saved
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = dict(model.named_parameters())
        state: dict[str, Any] = {}
        for name, entries in saved.get("state", {}).items():
            param = params.get(name)
            state[name] = dict(entries)
            if not isinstance(param, DTensor):
                continue
            for key, value in entries.items():
                if isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(param.shape):
                    # Every rank has the whole file: each keeps its own slice, no communication.
                    state[name][key] = distribute_tensor(value.to(self.device, param.dtype), param.device_mesh,
                                                         param.placements, src_data_rank=None)
        return {**saved, "state": state}


# ---------------------------------------------------------------- setting up and tearing down

def _pick_device(name: str, local_rank: int) -> torch.device:
    """Each process takes the GPU of its LOCAL_RANK (CUDA), or the CPU."""
    name = (name or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise DistributedError("CUDA was asked for, but this PyTorch build or machine has no CUDA GPU")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise DistributedError(f"process LOCAL_RANK={local_rank} has no GPU of its own: this machine has "
                                   f"{count}; use --nproc_per_node={count} or fewer")
        return torch.device("cuda", local_rank)
    if name == "mps":
        raise DistributedError("multi-process training runs on CUDA GPUs (NCCL) or CPUs (gloo), not on MPS; "
                               "use --device cpu, or train in one process")
    raise DistributedError(f"under torchrun each process takes the GPU of its LOCAL_RANK: use --device auto, "
                           f"cuda or cpu, not {name!r}")


def setup(device: str = "auto", *, fsdp: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by torchrun's environment variables."""
    if not launched_by_torchrun():
        raise DistributedError("not started by torchrun (RANK, LOCAL_RANK and WORLD_SIZE are not set); launch "
                               "with: torchrun --nproc_per_node=N -m engine train ...")
    if not timeout_s or timeout_s <= 0:
        raise DistributedError(f"the distributed timeout must be a positive number of seconds, got {timeout_s}")
    rank_, local_rank, world = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    target = _pick_device(device, local_rank)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                device_id=target if target.type == "cuda" else None)
    except (RuntimeError, ValueError) as e:  # torch's DistError family derives from RuntimeError
        raise DistributedError(f"rank {rank_}: could not join the other {world - 1} process(es): "
                               f"{_first_line(e)}") from None
    return DistContext(rank=rank_, local_rank=local_rank, world_size=world, device=target, backend=backend,
                       fsdp=fsdp, timeout_s=timeout_s)


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a failure, skip it: the group may be broken, and tearing it down
    could wait on peers that are gone (the process is about to exit anyway)."""
    if clean and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(ctx: DistContext | None) -> Iterator[None]:
    """Run the block in three waves so that one process fills each cache (tokenized corpus, downloaded
    encodings) and the others read it: rank 0 first, then the first process of every other machine (whose
    cache folder may be its own), then all the rest. Without a context, just runs the block.

    If the block fails in one process, that process exits and torchrun stops the ones still waiting."""
    if ctx is None or ctx.world_size == 1:
        yield
        return
    wave = 0 if ctx.rank == 0 else 1 if ctx.local_rank == 0 else 2
    for turn in range(3):
        if turn == wave:
            yield
        ctx.barrier()


def _is_distributed_failure(error: BaseException) -> bool:
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Timed out",
                                      "timed out", "NCCL error", "ProcessGroupNCCL", "gloo"))


def describe_failure(ctx: DistContext, error: BaseException) -> str:
    """One line saying what went wrong between the processes, and where to look."""
    text = _first_line(error)
    if "Timed out" in text or "timed out" in text or "timeout" in text.lower():
        why = (f"no answer from the other processes within {ctx.timeout_s:g} s (--dist-timeout): another "
               "process is stuck or gone")
    elif "closed by peer" in text or "reset by peer" in text:
        why = "another process ended unexpectedly; its own error message is above"
    else:
        why = "communication between the processes failed"
    return f"rank {ctx.rank}: {why} ({text})"


def run(train: Callable[[DistContext], int], *, device: str = "auto", fsdp: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Set up the process group, run `train(ctx)` on every rank, and leave the group.

    Only rank 0's standard output is kept (the other ranks' progress would repeat it); every rank's
    errors still reach standard error. A failing collective becomes a one-line DistributedError.
    """
    ctx = setup(device, fsdp=fsdp, timeout_s=timeout_s)
    clean = False
    try:
        with contextlib.ExitStack() as stack:
            if not ctx.is_main:
                quiet = stack.enter_context(open(os.devnull, "w", encoding="utf-8"))
                stack.enter_context(contextlib.redirect_stdout(quiet))
            result = train(ctx)
        clean = True
        return result
    except DistributedError:
        raise
    except Exception as e:
        if _is_distributed_failure(e):
            raise DistributedError(describe_failure(ctx, e)) from None
        raise
    finally:
        sys.stdout.flush()
        shutdown(clean)
