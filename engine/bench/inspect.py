"""`python -m engine bench inspect`: what the Inside analyses cost against the forward passes they are made of.

- Logit lens on 256 tokens: `logit_lens` (one forward that keeps each block's output, then per block the
  final norm, the head, a softmax, top-k, the rank of the actual next token and the entropy) against a plain
  forward of the same tokens plus the extra head matmuls (final norm and head on every block's output: the
  least any logit lens must do). The split says where the time goes. Target: at most ~1.5x.
- Head sweep on the `small` preset over 128 tokens: `head_sweep` (the intact run, then one ablated forward with
  all-position logits and the loss per head) against heads x layers plain forward passes. Target: at most 1.2x.

Each figure is the best of several runs (a shared machine only ever slows a run down). Random weights: the cost
does not depend on what the model learned.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from engine.config import preset
from engine.generation.capture import ForwardOptions
from engine.generation.forward import decoder_for
from engine.inspect import head_sweep, logit_lens
from engine.model import GPT

LENS_TARGET, SWEEP_TARGET = 1.5, 1.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lens-shapes", default="small,gpt2-124m", help="presets for the logit lens (comma-separated)")
    parser.add_argument("--lens-tokens", type=int, default=256, help="tokens for the logit lens")
    parser.add_argument("--sweep-shape", default="small", help="preset for the head sweep")
    parser.add_argument("--sweep-tokens", type=int, default=128, help="tokens for the head sweep")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up: first calls allocate and build the decode layout
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _model(name: str, tokens: int) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(0)
    config = preset(name).with_changes(drop_rate=0.0)
    if tokens > config.context_length:
        raise ValueError(f"{tokens} tokens do not fit {name}'s context of {config.context_length}")
    model = GPT(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(1))
    return model, ids


def bench_lens(name: str, tokens: int, repeats: int) -> dict:
    model, ids = _model(name, tokens)
    decoder = decoder_for(model)
    L = model.config.n_layers
    with torch.inference_mode():
        plain = best(lambda: decoder.forward(ids), repeats)
        residual = decoder.forward(ids, None, ForwardOptions(logits="none", capture_residuals=True)).residuals[0][0]
        heads = best(lambda: [decoder.unembed(residual) for _ in range(L)], repeats)
        capture = best(lambda: decoder.forward(ids, None, ForwardOptions(logits="none", capture_residuals=True)),
                       repeats)
    lens = best(lambda: logit_lens(model, ids[0], top_k=5), repeats)
    peer = plain + heads
    row = dict(shape=name, tokens=tokens, plain_forward_s=plain, head_matmuls_s=heads, forward_with_residuals_s=capture,
               logit_lens_s=lens, ratio=lens / peer)
    print(f"  logit lens, {name}, {tokens} tokens, {L} blocks, vocab {model.config.vocab_size:,}: "
          f"{lens * 1e3:.1f} ms vs plain forward {plain * 1e3:.1f} ms + {L} head matmuls {heads * 1e3:.1f} ms "
          f"= {peer * 1e3:.1f} ms: {row['ratio']:.2f}x (target <= {LENS_TARGET}x)\n"
          f"    split: forward keeping the residual stream {capture * 1e3:.1f} ms, head matmuls {heads * 1e3:.1f} ms, "
          f"softmax / top-k / rank / entropy and copies {max(0.0, lens - capture - heads) * 1e3:.1f} ms", flush=True)
    return row


def bench_sweep(name: str, tokens: int, repeats: int) -> dict:
    model, ids = _model(name, tokens)
    decoder = decoder_for(model)
    n = model.config.n_layers * model.config.n_heads
    with torch.inference_mode():
        plain = best(lambda: decoder.forward(ids), repeats * 3)
        scoring = best(lambda: decoder.forward(ids, None, ForwardOptions(logits="all")), repeats * 3)
    sweep = best(lambda: head_sweep(model, ids[0]), max(1, repeats - 1))
    row = dict(shape=name, tokens=tokens, heads=n, plain_forward_s=plain, all_logits_forward_s=scoring,
               sweep_s=sweep, ratio=sweep / (n * plain))
    print(f"  head sweep, {name}, {tokens} tokens, {n} heads: {sweep * 1e3:.0f} ms vs {n} plain forward passes "
          f"{n * plain * 1e3:.0f} ms: {row['ratio']:.2f}x (target <= {SWEEP_TARGET}x); "
          f"vs {n} forwards with every position's logits {n * scoring * 1e3:.0f} ms: {sweep / (n * scoring):.2f}x",
          flush=True)
    return row


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Inside analyses against plain forward passes (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU):", flush=True)
    for name in [s.strip() for s in args.lens_shapes.split(",") if s.strip()]:
        bench_lens(name, args.lens_tokens, args.repeats)
    bench_sweep(args.sweep_shape, args.sweep_tokens, args.repeats)
    return 0
