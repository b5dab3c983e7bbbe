"""`python -m engine bench generate`: our decoding against transformers' generate() on the same weights and device.

    python -m engine bench generate [--device auto|cpu|cuda] [--preset NAME | --model HF_FOLDER]
                                    [--precision fp32|bf16|fp16] [--compile] [--hf-static] [--json]

A randomly initialised transformers model of the preset's shape (GPT2LMHeadModel) is imported into our GPT
(engine.hf_import), so both run exactly the same network; `--model` loads a Hugging Face folder into both
instead. For each shape, batch 1 and 4, greedy and sampling, every contender generates the same number of
tokens from the same prompt in the same run, in alternating repeats, and the best repeat is kept (a shared
machine only ever slows a run down). Tokens/s counts every new token of every row over the wall time,
prompt pass included. The contenders:
- transformers: `generate()`, eager, its dynamic KV cache;
- ours: the engine's eager decoding (`stream_generate(compile=False)`);
- ours compiled (with --compile, and always on CUDA): the compiled static-cache decode step
  (engine/generation/compiled.py), compiled once before timing;
- transformers static (with --hf-static, and always on CUDA): `generate(cache_implementation="static")`,
  which compiles its forward with torch.compile mode "reduce-overhead" (transformers' CompileConfig),
  also compiled before timing.

Also printed (on the CPU): the llama family on a SmolLM2-135M-shaped model (engine/bench/llama.py: decoding in
fp32 and bf16, a 512-token prefill, memory after opening), the cost of attention maps against a plain forward,
the weights' memory per precision, and with --checkpoint, how often greedy decoding in bf16 / int8 agrees with
fp32 on a trained model.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from engine.bench import llama
from engine.checkpoint import load_checkpoint
from engine.config import PRESETS, preset
from engine.device import INFERENCE_PRECISIONS, check_precision, device_name, pick_device, synchronize
from engine.generation.agreement import greedy_agreement
from engine.generation.attention import attention_maps
from engine.generation.forward import decoder_for
from engine.generation.precision import DTYPES, weights_memory_bytes
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import GenerationDoneEvent, stream_generate
from engine.hf_import import gpt_from_hf, import_hf_folder
from engine.model import GPT
from engine.sources import HF_FOLDER, resolve_source
from engine.tokenizers import CharTokenizer

TARGETS = {("small", 1): 1.4, ("gpt2-124m", 1): 1.2}  # ours / transformers at batch 1, fp32, on a CPU
GPU_TARGET_VS_EAGER = 5.0  # ours compiled / transformers eager at batch 1 on a GPU
GPU_TARGET_VS_STATIC = 1.0  # ours compiled / transformers static-cache compiled
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.95)
CONTENDERS = ("transformers", "ours", "ours_compiled", "transformers_static")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where both run (default: CUDA if there is one, else the CPU)")
    parser.add_argument("--preset", choices=list(PRESETS), help="one model shape (default: small and gpt2-124m)")
    parser.add_argument("--shapes", default="", help="presets to measure, comma-separated (default small,gpt2-124m)")
    parser.add_argument("--model", metavar="HF_MODEL",
                        help="a Hugging Face model folder (config.json, model.safetensors) or a repo id in the HF "
                             "cache, loaded into both")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="number format of both models (fp16 needs CUDA)")
    parser.add_argument("--compile", action="store_true",
                        help="also time our compiled static-cache decoding (always on CUDA)")
    parser.add_argument("--hf-static", action="store_true",
                        help="also time transformers' static-cache compiled generate (always on CUDA)")
    parser.add_argument("--batches", default="1,4", help="batch sizes (comma-separated)")
    parser.add_argument("--new-tokens", type=int, default=0,
                        help="tokens per row (default: 64 small, 32 gpt2-124m on a CPU; 256 on CUDA)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best is kept")
    parser.add_argument("--modes", default="greedy,sample", help="greedy, sample or both (comma-separated)")
    parser.add_argument("--skip-attention", action="store_true", help="don't time attention maps")
    parser.add_argument("--skip-llama", action="store_true", help="don't measure the SmolLM2-shaped llama model")
    parser.add_argument("--llama-tokens", type=int, default=48, help="new tokens for the llama model")
    parser.add_argument("--prefill-tokens", type=int, default=512, help="prompt length of the llama prefill")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for both sides (default: torch's own; 1 steadies a busy shared machine)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="also measure greedy agreement of bf16 / int8 with fp32 on this trained checkpoint")
    parser.add_argument("--agreement-tokens", type=int, default=256, help="tokens for the agreement run")
    parser.add_argument("--agreement-prompt", default="The ", help="prompt for the agreement run")
    parser.add_argument("--json", action="store_true", help="one JSON object per measurement instead of text")


def _quiet_transformers():
    import transformers  # optional heavy dependency: only the benchmarks need it

    transformers.utils.logging.set_verbosity_error()
    return transformers


def _hf_and_ours(name: str):
    """A random transformers GPT-2 of a preset's shape and our GPT with the same weights (both on the CPU)."""
    transformers = _quiet_transformers()
    c = preset(name)
    hf_config = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.emb_dim,
                                        n_layer=c.n_layers, n_head=c.n_heads, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    return hf, gpt_from_hf(hf.state_dict(), hf_config.to_dict())


def _hf_folder_and_ours(name: str):
    """transformers' and our model of the same Hugging Face model (a folder, or a repo id in the HF cache)."""
    source = resolve_source(name)
    if source.kind != HF_FOLDER:
        raise ValueError(f"--model needs a Hugging Face model (a folder with config.json, or a cached repo id); "
                         f"{source.name} is not one, and transformers must load the same weights")
    model, _ = import_hf_folder(source.path, dtype="fp32")
    transformers = _quiet_transformers()
    hf = transformers.AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32).eval()
    return hf, model


def _hf_generate(hf, prompt: torch.Tensor, n: int, sample: bool, static: bool) -> torch.Tensor:
    kwargs: dict[str, Any] = dict(do_sample=True, **SAMPLING) if sample else dict(do_sample=False)
    if static:
        transformers = _quiet_transformers()
        config = transformers.CompileConfig()  # mode "reduce-overhead", transformers' defaults
        config._compile_all_devices = True  # transformers compiles only on accelerators unless told
        kwargs.update(cache_implementation="static", compile_config=config)
    with torch.inference_mode():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=0, eos_token_id=None, **kwargs)


def _time_hf(hf, prompt: torch.Tensor, n: int, sample: bool, static: bool = False) -> tuple[float, list[list[int]]]:
    synchronize(prompt.device)
    start = time.perf_counter()
    out = _hf_generate(hf, prompt, n, sample, static)
    ids = out[:, prompt.shape[1]:].tolist()  # the sync point
    seconds = time.perf_counter() - start
    return prompt.shape[0] * n / seconds, ids


def _time_ours(model, prompt: torch.Tensor, n: int, sample: bool, precision: str = "fp32",
               compile: bool = False) -> tuple[float, list[list[int]]]:
    config = SamplingConfig(seed=0, max_new_tokens=n, **SAMPLING) if sample else \
        SamplingConfig(greedy=True, max_new_tokens=n)
    start = time.perf_counter()
    done = None
    for event in stream_generate(model, CharTokenizer("a"), "", [config] * prompt.shape[0],
                                 prompt_ids=prompt[0].tolist(), precision=precision, compile=compile):
        if isinstance(event, GenerationDoneEvent):
            done = event
    seconds = time.perf_counter() - start - done.compile_seconds
    return prompt.shape[0] * n / seconds, [list(x) for x in done.ids]


def _ratio_note(row: dict, device: torch.device, name: str) -> str:
    notes = []
    eager = row["transformers"]
    if device.type == "cuda" and row["batch"] == 1 and "ours_compiled" in row:
        notes.append(f"compiled / transformers {row['ours_compiled'] / eager:.2f}x (target >= {GPU_TARGET_VS_EAGER:g}x)")
        if "transformers_static" in row:
            notes.append(f"compiled / transformers static {row['ours_compiled'] / row['transformers_static']:.2f}x "
                         f"(target >= {GPU_TARGET_VS_STATIC:g}x)")
    else:
        target = TARGETS.get((name, row["batch"])) if device.type == "cpu" and row["precision"] == "fp32" else None
        notes.append(f"ours / transformers {row['ours'] / eager:.2f}x" + (f" (target {target}x)" if target else ""))
        if "ours_compiled" in row:
            notes.append(f"compiled / eager ours {row['ours_compiled'] / row['ours']:.2f}x")
    if row.get("same_ids") is not None:
        notes.append(f"greedy ids {'identical' if row['same_ids'] else 'DIFFER'}")
    if row.get("compiled_same_ids") is not None:
        notes.append(f"compiled ids {'identical' if row['compiled_same_ids'] else 'DIFFER'}")
    return "; ".join(notes)


def bench_decoding(name: str, hf, ours, device: torch.device, precision: str, batches: list[int], modes: list[str],
                   n: int, prompt_tokens: int, repeats: int, contenders: list[str], as_json: bool) -> list[dict]:
    hf = hf.to(device=device, dtype=DTYPES[precision])
    ours = ours.to(device)
    vocab = ours.config.vocab_size
    prompt1 = torch.randint(0, vocab, (1, prompt_tokens), generator=torch.Generator().manual_seed(1)).to(device)
    run = {
        "transformers": lambda p, k, s: _time_hf(hf, p, k, s),
        "ours": lambda p, k, s: _time_ours(ours, p, k, s, precision),
        "ours_compiled": lambda p, k, s: _time_ours(ours, p, k, s, precision, compile=True),
        "transformers_static": lambda p, k, s: _time_hf(hf, p, k, s, static=True),
    }
    # Warm up (first calls allocate, build the decode layouts, import lazily).
    run["transformers"](prompt1, 2, False)
    run["ours"](prompt1, 2, False)
    rows = []
    for batch in batches:
        prompt = prompt1.expand(batch, -1).contiguous()
        for name_ in contenders:  # compile outside the timings (once per batch size; the static cache's length too)
            if name_ in ("ours_compiled", "transformers_static"):
                run[name_](prompt, n, False)
        for mode in modes:
            sample = mode == "sample"
            best = dict.fromkeys(contenders, 0.0)
            ids: dict[str, list] = {}
            for _ in range(repeats):
                for name_ in contenders:
                    tps, ids[name_] = run[name_](prompt, n, sample)
                    best[name_] = max(best[name_], tps)
            row: dict[str, Any] = dict(shape=name, batch=batch, mode=mode, device=device_name(device),
                                       precision=precision, new_tokens=n, **best)
            row["same_ids"] = ids["transformers"] == ids["ours"] if not sample and precision == "fp32" else None
            row["compiled_same_ids"] = ids["ours_compiled"] == ids["ours"] if "ours_compiled" in ids else None
            rows.append(row)
            if as_json:
                print(json.dumps(row), flush=True)
            else:
                figures = "   ".join(f"{c.replace('_', ' ')} {best[c]:8.1f}" for c in contenders)
                print(f"  {name:10s} batch {batch}  {mode:6s}  {figures} tok/s   {_ratio_note(row, device, name)}",
                      flush=True)
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
    device = pick_device(getattr(args, "device", "auto"))
    precision = getattr(args, "precision", "fp32")
    check_precision(precision, device, use="inference")
    model_path = getattr(args, "model", None)
    if model_path:
        shapes = [resolve_source(model_path).name]
    elif getattr(args, "preset", None):
        shapes = [args.preset]
    else:
        shapes = [s.strip() for s in (getattr(args, "shapes", "") or "small,gpt2-124m").split(",") if s.strip()]
        for s in shapes:
            preset(s)  # an unknown name is one error line before anything runs
    batches = [int(b) for b in getattr(args, "batches", "1,4").split(",")]
    modes = [m.strip() for m in getattr(args, "modes", "greedy,sample").split(",") if m.strip()]
    if not modes or any(m not in ("greedy", "sample") for m in modes):
        raise ValueError("--modes takes greedy, sample or both")
    repeats = max(1, int(getattr(args, "repeats", 2)))
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    contenders = ["transformers", "ours"]
    if getattr(args, "compile", False) or cuda:
        contenders.append("ours_compiled")
    if getattr(args, "hf_static", False) or cuda:
        contenders.append("transformers_static")
    as_json = getattr(args, "json", False)
    if not as_json:
        print(f"generation benchmark: torch {torch.__version__}, {device_name(device)}, {precision}; tokens/s = all "
              f"rows' new tokens / wall time (prompt pass included, compiling not), best of {repeats}")
    for name in shapes:
        n = getattr(args, "new_tokens", 0) or (256 if cuda else 32 if name == "gpt2-124m" else 64)
        hf, ours = _hf_folder_and_ours(model_path) if model_path else _hf_and_ours(name)
        n = min(n, ours.config.context_length - getattr(args, "prompt_tokens", 16))
        if not as_json:
            print(f"{name}: {n} new tokens per row after a {getattr(args, 'prompt_tokens', 16)}-token prompt")
        bench_decoding(name, hf, ours, device, precision, batches, modes, n, getattr(args, "prompt_tokens", 16),
                       repeats, contenders, as_json)
    if as_json:
        return 0
    if not getattr(args, "skip_llama", False) and not cuda:
        llama.run(getattr(args, "llama_tokens", 48), getattr(args, "prompt_tokens", 16),
                  getattr(args, "prefill_tokens", 512), repeats)
    if not getattr(args, "skip_attention", False) and not cuda:
        print("attention maps (whole context, one sequence):")
        bench_attention(repeats)
    print("weights memory:")
    print_memory()
    if getattr(args, "checkpoint", None):
        print(f"greedy agreement with fp32 on {args.checkpoint}:")
        bench_agreement(args.checkpoint, getattr(args, "agreement_tokens", 256),
                        getattr(args, "agreement_prompt", "The "))
    return 0
