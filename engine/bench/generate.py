"""`python -m engine bench generate`: our decoding against transformers' generate() on the same weights.

A randomly initialised transformers GPT2LMHeadModel is imported into our GPT (engine.hf_import), so both
run exactly the same network. For each shape (the small preset's and gpt2-124m), batch 1 and 4, greedy
and sampling, both generate the same number of tokens from the same prompt in the same run, alternating,
and the best of the repeats is kept (the machine may be shared: noise only ever slows a run down).
Tokens/s counts every new token of every row over the wall time, prompt pass included.

Also printed: the cost of attention maps against a plain forward, the weights' memory per precision,
and with --checkpoint, how often greedy decoding in bf16 / int8 agrees with fp32 on a trained model.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from engine.checkpoint import load_checkpoint
from engine.config import preset
from engine.device import INFERENCE_PRECISIONS
from engine.generation.agreement import greedy_agreement
from engine.generation.attention import attention_maps
from engine.generation.forward import decoder_for
from engine.generation.precision import weights_memory_bytes
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import GenerationDoneEvent, stream_generate
from engine.hf_import import gpt_from_hf
from engine.model import GPT
from engine.tokenizers import CharTokenizer

TARGETS = {("small", 1): 1.4, ("gpt2-124m", 1): 1.2}  # ours / transformers at batch 1, fp32, greedy and sampling
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.95)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", default="small,gpt2-124m", help="presets to measure (comma-separated)")
    parser.add_argument("--batches", default="1,4", help="batch sizes (comma-separated)")
    parser.add_argument("--new-tokens", type=int, default=0, help="tokens per row (default: 64 small, 32 gpt2)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best is kept")
    parser.add_argument("--skip-attention", action="store_true", help="don't time attention maps")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="also measure greedy agreement of bf16 / int8 with fp32 on this trained checkpoint")
    parser.add_argument("--agreement-tokens", type=int, default=256, help="tokens for the agreement run")
    parser.add_argument("--agreement-prompt", default="The ", help="prompt for the agreement run")


def _hf_and_ours(name: str):
    import transformers


    c = preset(name)
    hf_config = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.emb_dim,
                                        n_layer=c.n_layers, n_head=c.n_heads, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    return hf, gpt_from_hf(hf.state_dict(), hf_config.to_dict())


def _time_hf(hf, prompt: torch.Tensor, n: int, sample: bool) -> tuple[float, list[list[int]]]:
    kwargs: dict[str, Any] = dict(do_sample=True, **SAMPLING) if sample else dict(do_sample=False)
    with torch.inference_mode():
        start = time.perf_counter()
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                          pad_token_id=0, eos_token_id=None, **kwargs)
        seconds = time.perf_counter() - start
    return prompt.shape[0] * n / seconds, out[:, prompt.shape[1]:].tolist()


def _time_ours(model, prompt: torch.Tensor, n: int, sample: bool) -> tuple[float, list[list[int]]]:
    config = SamplingConfig(seed=0, max_new_tokens=n, **SAMPLING) if sample else \
        SamplingConfig(greedy=True, max_new_tokens=n)
    start = time.perf_counter()
    done = None
    for event in stream_generate(model, CharTokenizer("a"), "", [config] * prompt.shape[0],
                                 prompt_ids=prompt[0].tolist()):
        if isinstance(event, GenerationDoneEvent):
            done = event
    seconds = time.perf_counter() - start
    return prompt.shape[0] * n / seconds, [list(x) for x in done.ids]


def bench_decoding(name: str, batches: list[int], n: int, prompt_tokens: int, repeats: int) -> list[dict]:
    hf, ours = _hf_and_ours(name)
    prompt1 = torch.randint(0, ours.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    # Warm up both (first calls allocate, build the decode layout, import lazily).
    _time_hf(hf, prompt1, 2, False)
    _time_ours(ours, prompt1, 2, False)
    rows = []
    for batch in batches:
        prompt = prompt1.expand(batch, -1).contiguous()
        for sample in (False, True):
            best_hf = best_ours = 0.0
            same = None
            for _ in range(repeats):
                hf_tps, hf_ids = _time_hf(hf, prompt, n, sample)
                our_tps, our_ids = _time_ours(ours, prompt, n, sample)
                best_hf, best_ours = max(best_hf, hf_tps), max(best_ours, our_tps)
                if not sample:
                    same = hf_ids == our_ids
            row = dict(shape=name, batch=batch, mode="sample" if sample else "greedy", transformers=best_hf,
                       ours=best_ours, ratio=best_ours / best_hf, same_ids=same)
            rows.append(row)
            target = TARGETS.get((name, batch))
            print(f"  {name:10s} batch {batch}  {row['mode']:6s}  transformers {best_hf:7.1f} tok/s   "
                  f"ours {best_ours:7.1f} tok/s   {row['ratio']:.2f}x"
                  + (f"  (target {target}x)" if target else "")
                  + ("" if same is None else f"   greedy ids {'identical' if same else 'DIFFER'}"), flush=True)
    return rows


def bench_attention(repeats: int) -> None:
    """Attention maps against a plain forward of the same tokens, both through the one inference forward
    (Decoder.forward: a prompt pass without options, and attention_maps' capture_attention pass)."""
    for name in ("tiny", "small"):
        model = GPT(preset(name)).eval()
        T = model.config.context_length
        ids = torch.randint(0, model.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
        decoder = decoder_for(model)

        def best(fn) -> float:
            fn()
            times = []
            for _ in range(max(3, repeats * 3)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return min(times)

        with torch.inference_mode():
            plain = best(lambda d=decoder, x=ids: d.forward(x, d.new_cache(1)))
            training = best(lambda m=model, x=ids: m(x))
        maps = best(lambda m=model, x=ids: attention_maps(m, x[0]))
        print(f"  {name:6s} T={T}: plain forward {plain * 1e3:6.1f} ms   attention_maps {maps * 1e3:6.1f} ms "
              f"({maps / plain:.2f}x, target <= 1.15x)   training forward, all logits {training * 1e3:6.1f} ms",
              flush=True)


def print_memory() -> None:
    for name in ("small", "gpt2-124m"):
        with torch.device("meta"):
            model = GPT(preset(name))
        sizes = "   ".join(f"{p} {weights_memory_bytes(model, p) / 1e6:7.1f} MB" for p in INFERENCE_PRECISIONS)
        print(f"  {name:10s} {sizes}")


def bench_agreement(path: str, n_tokens: int, prompt: str = "The ") -> None:
    checkpoint = load_checkpoint(path)
    precisions = ["bf16", "int8"] + (["fp16"] if torch.cuda.is_available() else [])
    for precision in precisions:
        r = greedy_agreement(checkpoint.model, checkpoint.tokenizer, prompt, precision, n_tokens)
        print(f"  {precision:5s} {weights_memory_bytes(checkpoint.model, precision) / 1e6:6.2f} MB: per-step "
              f"(teacher-forced) arg-max agreement {r.teacher_forced:.1%}; free-running greedy identical for the "
              f"first {r.first_divergence} of {r.n_tokens} tokens ({r.free_run_match:.1%} of positions equal)",
              flush=True)


def run(args: argparse.Namespace) -> int:
    shapes = [s.strip() for s in getattr(args, "shapes", "small,gpt2-124m").split(",") if s.strip()]
    batches = [int(b) for b in getattr(args, "batches", "1,4").split(",")]
    repeats = max(1, int(getattr(args, "repeats", 2)))
    print(f"generation benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on CPU; "
          f"tokens/s = all rows' new tokens / wall time (prompt pass included), best of {repeats}")
    for name in shapes:
        n = getattr(args, "new_tokens", 0) or (32 if name == "gpt2-124m" else 64)
        print(f"{name}: {n} new tokens per row after a {getattr(args, 'prompt_tokens', 16)}-token prompt")
        bench_decoding(name, batches, n, getattr(args, "prompt_tokens", 16), repeats)
    if not getattr(args, "skip_attention", False):
        print("attention maps (whole context, one sequence):")
        bench_attention(repeats)
    print("weights memory:")
    print_memory()
    if getattr(args, "checkpoint", None):
        print(f"greedy agreement with fp32 on {args.checkpoint}:")
        bench_agreement(args.checkpoint, getattr(args, "agreement_tokens", 256),
                        getattr(args, "agreement_prompt", "The "))
    return 0
