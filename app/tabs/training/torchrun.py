"""The `torchrun ... -m engine train ...` command line for the Training tab's settings.

The same training runs unchanged on many GPUs with PyTorch's torchrun (see the README's scaling
section): the app builds the command so a person can copy it to a cluster. Flags are those of
`python -m engine train`; `--batch-size` is per rank, so the global batch is
nproc_per_node x nnodes x batch size x grad accumulation.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from engine import PRESETS, ModelConfig, TrainConfig

SHAPE_FLAGS = (("n_layers", "--n-layers"), ("n_heads", "--n-heads"), ("emb_dim", "--emb-dim"),
               ("context_length", "--context-length"), ("drop_rate", "--drop-rate"))


@dataclass
class Launch:
    """Where and how wide to run."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str = "HOST:29500"  # multi-node only: the first node's address
    fsdp: bool = False


def closest_preset(config: ModelConfig) -> str:
    """The preset that needs the fewest override flags to reach this shape."""
    def distance(name: str) -> int:
        p = PRESETS[name]
        return sum(getattr(p, f) != getattr(config, f) for f, _ in SHAPE_FLAGS) + (p.qkv_bias != config.qkv_bias)
    return min(PRESETS, key=distance)


def torchrun_command(model: ModelConfig, train: TrainConfig, *, corpus: str, tokenizer: str | None,
                     out: str = "model.safetensors", init: str | None = None,
                     launch: Launch | None = None) -> str:
    """One shell line: torchrun with its rendezvous flags, then `-m engine train` with the run's settings.

    tokenizer: a spec (char, bpe:N, gpt2, a file), or None when `init` (fine-tuning) brings its own.
    """
    launch = launch or Launch()
    words: list[str] = ["torchrun"]
    if launch.nnodes <= 1:
        words += ["--standalone", f"--nproc_per_node={launch.nproc_per_node}"]
    else:
        words += [f"--nnodes={launch.nnodes}", f"--nproc_per_node={launch.nproc_per_node}",
                  "--rdzv_backend=c10d", f"--rdzv_endpoint={launch.rdzv_endpoint}", "--rdzv_id=llm-playground"]
    words += ["-m", "engine", "train"]
    if init:
        words += ["--init", init]
    else:
        preset = closest_preset(model)
        words += ["--preset", preset]
        base = PRESETS[preset]
        for field, flag in SHAPE_FLAGS:
            value = getattr(model, field)
            if value != getattr(base, field):
                words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if model.qkv_bias and not base.qkv_bias:
            words.append("--qkv-bias")
    words += ["--corpus", corpus]
    if tokenizer and not init:
        words += ["--tokenizer", tokenizer]
    defaults = TrainConfig()
    words += ["--steps", str(train.steps), "--batch-size", str(train.batch_size)]
    if train.grad_accum != 1:
        words += ["--grad-accum", str(train.grad_accum)]
    words += ["--lr", f"{train.lr:g}", "--warmup-steps", str(train.warmup_steps),
              "--eval-interval", str(train.eval_interval)]
    if train.sample_interval != defaults.sample_interval:
        words += ["--sample-interval", str(train.sample_interval)]
    if train.seed != defaults.seed:
        words += ["--seed", str(train.seed)]
    # Each rank takes its own GPU (LOCAL_RANK): a GPU index or Apple's MPS from this machine means nothing there.
    device = "cuda" if train.device.startswith("cuda") else "auto" if train.device == "mps" else train.device
    words += ["--device", device, "--precision", train.precision]
    if train.compile:
        words.append("--compile")
    if launch.fsdp:
        words.append("--fsdp")
    words += ["--out", out]
    return " ".join(shlex.quote(w) for w in words)
