"""`python -m engine bench train`: a training step of our GPT against transformers' GPT2LMHeadModel.

Both models get the same shape (default: the `small` preset with a 96-token, character-sized vocabulary;
gpt2-124m keeps GPT-2's 50,257 tokens; dropout off in both, so the figure measures the model and not the random number generator), the same
random batch, the same loss (cross-entropy over every position), the same gradient clipping, and each its
natural optimizer: ours is the trainer's (`GPT.configure_optimizer`), transformers' is torch's AdamW with the
same decay groups and defaults. Steps of the two are timed in alternating rounds so background load hits
both alike; the median step time gives tokens/s, and MFU compares FLOPs (6N + 12·L·H·Q·T per token) with the
device's peak (engine/device.py): a GPU's published bf16/fp16 dense peak where its table knows the GPU
(H100, H200, A100, L4, RTX 4090), else the measured matmul peak.

On a GPU: `python -m engine bench train --device cuda --preset gpt2-124m --precision bf16 --compile`
(target: MFU >= 45% of the bf16 dense peak).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from engine.config import PRESETS, preset
from engine.device import (
    autocast_context,
    check_precision,
    cpu_supports_bf16,
    device_name,
    peak_flops,
    peak_source,
    pick_device,
    synchronize,
)
from engine.model import GPT

TARGETS = {"fp32": 1.2, "bf16": 1.7}  # speed-up over transformers asked for on a 2-core CPU
MFU_TARGET = {"fp32": 0.80}  # on a CPU, against its measured peak
GPU_MFU_TARGET = {"bf16": 0.45}  # on a GPU with --compile, against its bf16 dense peak


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", choices=list(PRESETS), help="model shape (default small)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="vocabulary size (default 96, characters; gpt2-124m: GPT-2's 50,257)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--context-length", type=int, help="tokens per sequence (default: the preset's)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: fp32, then bf16 where the device supports it")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--ours-only", action="store_true", help="skip transformers (e.g. to measure MFU alone)")
    parser.add_argument("--json", action="store_true", help="one JSON object per precision")


def _hf_model(config) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.emb_dim,
        n_layer=config.n_layers, n_head=config.n_heads, resid_pdrop=config.drop_rate,
        embd_pdrop=config.drop_rate, attn_pdrop=config.drop_rate, activation_function="gelu_new",
        bos_token_id=0, eos_token_id=0, use_cache=False)
    hf_config._attn_implementation = "sdpa"  # its fastest attention, the same kernel as ours
    return GPT2LMHeadModel(hf_config)


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _step_fn(forward: Callable, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             x: torch.Tensor, y: torch.Tensor, device: torch.device, precision: str) -> Callable[[], float]:
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> float:
        with autocast_context(device, precision):
            logits = forward(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # the sync point, as in the trainer
    return step


def _time_steps(step: Callable[[], float], n: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(n):
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _vocab_size(args: argparse.Namespace) -> int:
    if args.vocab_size is not None:
        return args.vocab_size
    return preset(args.preset).vocab_size if args.preset == "gpt2-124m" else 96


def bench_precision(args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, Any]:
    config = preset(args.preset).with_changes(vocab_size=_vocab_size(args), context_length=args.context_length,
                                              drop_rate=0.0)
    B, T = args.batch_size, config.context_length
    torch.manual_seed(0)
    x = torch.randint(0, config.vocab_size, (B, T), device=device)
    y = torch.randint(0, config.vocab_size, (B, T), device=device)

    ours = GPT(config).to(device).train()
    ours_opt = ours.configure_optimizer(6e-4, 0.1, (0.9, 0.95), device.type)
    ours_fwd = torch.compile(ours) if args.compile else ours
    steps = {"ours": _step_fn(lambda t: ours_fwd(t)[0], ours, ours_opt, x, y, device, precision)}
    if not args.ours_only:
        hf = _hf_model(config).to(device).train()
        fused = {"fused": True} if device.type == "cuda" else {}
        hf_opt = torch.optim.AdamW(_decay_groups(hf, 0.1), lr=6e-4, betas=(0.9, 0.95), **fused)
        hf_fwd = torch.compile(hf) if args.compile else hf
        steps["transformers"] = _step_fn(lambda t: hf_fwd(input_ids=t).logits, hf, hf_opt, x, y, device, precision)

    for step in steps.values():
        _time_steps(step, args.warmup, device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name] += _time_steps(step, args.steps, device)

    peak = peak_flops(device, precision, refresh=True)  # a fresh probe: a stale low one would inflate MFU
    flops_per_step = ours.flops_per_token() * B * T
    result: dict[str, Any] = {"precision": precision, "device": device_name(device), "device_type": device.type,
                              "preset": args.preset,
                              "vocab_size": config.vocab_size, "batch_size": B, "context_length": T,
                              "params": ours.num_params(), "compile": bool(args.compile), "peak_tflops": peak / 1e12,
                              "peak_source": peak_source(device, precision)}
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name] = {"step_ms": 1000 * median, "best_step_ms": 1000 * min(ts),
                        "tokens_per_s": B * T / median, "mfu": flops_per_step / median / peak}
    if "transformers" in result:
        result["ratio"] = result["ours"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    return result


def _report(r: dict[str, Any]) -> None:
    print(f"{r['precision']}:")
    for name in ("ours", "transformers"):
        if name in r:
            m = r[name]
            print(f"  {name:<13} {m['step_ms']:8.1f} ms/step  {m['tokens_per_s']:9,.0f} tokens/s  "
                  f"MFU {100 * m['mfu']:5.1f}%")
    notes = []
    if "ratio" in r:
        target = TARGETS.get(r["precision"])
        notes.append(f"ours / transformers = {r['ratio']:.2f}x" + (f" (target >= {target}x)" if target else ""))
    targets = GPU_MFU_TARGET if r["device_type"] == "cuda" else MFU_TARGET
    if r["precision"] in targets:
        notes.append(f"MFU target >= {100 * targets[r['precision']]:.0f}%")
    if notes:
        print("  " + "; ".join(notes))


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    if args.precision == "auto":
        precisions = ["fp32"]
        if device.type == "cuda" and torch.cuda.is_bf16_supported() or \
                device.type == "cpu" and cpu_supports_bf16():
            precisions.append("bf16")
    else:
        check_precision(args.precision, device)
        precisions = [args.precision]
    if not args.json:
        c = preset(args.preset).with_changes(vocab_size=_vocab_size(args), context_length=args.context_length)
        print(f"bench train: {args.preset} shape ({c.n_layers} layers, {c.n_heads} heads, emb_dim {c.emb_dim}, "
              f"context {c.context_length}), vocab {c.vocab_size}, batch {args.batch_size}, dropout off, "
              f"on {device_name(device)}; median of {args.rounds} x {args.steps} steps")
    for precision in precisions:
        result = bench_precision(args, device, precision)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            _report(result)
            print(f"  (MFU against the {result['peak_source']}: {result['peak_tflops'] * 1000:,.0f} GFLOP/s)")
    return 0
