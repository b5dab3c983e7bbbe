"""The `torchrun ... -m engine train ...` command line for the Training tab's settings.

The same training runs unchanged on many GPUs with PyTorch's torchrun (see the README's scaling
section): the app builds the command so a person can copy it to a cluster. The engine writes its own
flags (engine.train_command); `--batch-size` is per rank, so the global batch is
nproc_per_node x nnodes x batch size x grad accumulation.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from engine import ModelConfig, TrainConfig, train_command


@dataclass
class Launch:
    """Where and how wide to run."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str = "HOST:29500"  # multi-node only: the first node's address
    fsdp: bool = False


def torchrun_command(model: ModelConfig, train: TrainConfig, *, corpus: str, tokenizer: str | None,
                     out: str = "model.safetensors", init: str | None = None,
                     launch: Launch | None = None) -> str:
    """One shell line: torchrun with its rendezvous flags, then `-m engine` with the engine's own words for
    the run (engine.train_command).

    tokenizer: a spec (char, bpe:N, gpt2, a file), or None when `init` (fine-tuning) brings its own.
    """
    launch = launch or Launch()
    words: list[str] = ["torchrun"]
    if launch.nnodes <= 1:
        words += ["--standalone", f"--nproc_per_node={launch.nproc_per_node}"]
    else:
        words += [f"--nnodes={launch.nnodes}", f"--nproc_per_node={launch.nproc_per_node}",
                  "--rdzv_backend=c10d", f"--rdzv_endpoint={launch.rdzv_endpoint}", "--rdzv_id=llm-playground"]
    # Each rank takes its own GPU (LOCAL_RANK): a GPU index or Apple's MPS from this machine means nothing there.
    device = "cuda" if train.device.startswith("cuda") else "auto" if train.device == "mps" else train.device
    words += ["-m", "engine", *train_command(model, replace(train, device=device), corpus=corpus, tokenizer=tokenizer,
                                             init=init, out=out, fsdp=launch.fsdp)]
    return " ".join(shlex.quote(w) for w in words)
