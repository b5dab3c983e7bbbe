"""The llama family in `python -m engine bench generate`: a SmolLM2-135M-shaped model against transformers.

The shape is SmolLM2-135M's (30 layers, emb 576, 9 query heads sharing 3 key/value heads, MLP 1536, vocab 49152,
tied head, rope_theta 100000) with random weights: a transformers LlamaForCausalLM is saved with save_pretrained
into a temporary folder and opened by the engine from there (memory-mapped, as any Hugging Face folder), so both
run the same network. Measured in one run, each figure against its transformers peer:

- decoding: batch-1 greedy tokens/s (prompt pass included) against `generate()`, in fp32 and in bf16
  (target >= 1.3x); best of the repeats, the two alternating;
- prefill: one forward pass over a 512-token prompt, last logits only (what generate's first step does),
  against transformers' (target: no slower);
- memory: resident memory gained by opening the model in a fresh process (the RSS after, minus the RSS after
  `import engine` / `import transformers`), against the weights' bytes (target <= 1.3x).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.generation.forward import decoder_for
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import GenerationDoneEvent, stream_generate
from engine.sources import open_model
from engine.tokenizers import CharTokenizer

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                    bos_token_id=None, eos_token_id=None, pad_token_id=None)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Run in a fresh interpreter: the resident memory gained by opening the model (sys.argv: "ours"|"hf", folder).
_MEMORY_PROBE = """
import sys, torch

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * __import__("os").sysconf("SC_PAGE_SIZE")

if sys.argv[1] == "ours":
    from engine.sources import open_model
    before = rss()
    model = open_model(sys.argv[2], dtype="fp32").model
else:
    import transformers
    before = rss()
    model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
print(rss() - before)
"""


def _save_folder(folder: Path):
    """The random model saved with save_pretrained, with a byte-level tokenizer.json (256 tokens: the folder needs
    one, the benchmark feeds ids)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M)).eval()
    hf.save_pretrained(folder)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE({ch: i for i, ch in enumerate(sorted(alphabet))}, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(folder / "tokenizer.json"))
    return hf


def _time_hf(hf, prompt: torch.Tensor, n: int) -> tuple[float, list[int]]:
    with torch.inference_mode():
        start = time.perf_counter()
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
        seconds = time.perf_counter() - start
    return n / seconds, out[0, prompt.shape[1]:].tolist()


def _time_ours(model, prompt: torch.Tensor, n: int, precision: str) -> tuple[float, list[int]]:
    start = time.perf_counter()
    done = None
    for event in stream_generate(model, CharTokenizer("a"), "", [SamplingConfig(greedy=True, max_new_tokens=n)],
                                 precision=precision, prompt_ids=prompt[0].tolist()):
        if isinstance(event, GenerationDoneEvent):
            done = event
    seconds = time.perf_counter() - start
    return n / seconds, list(done.ids[0])


def bench_decoding(hf, ours, n: int, prompt_tokens: int, repeats: int) -> None:
    prompt = torch.randint(0, 49152, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    for precision, dtype in DTYPES.items():
        model = hf.to(dtype)
        _time_hf(model, prompt, 2)  # warm-up: first calls allocate, our decoder makes its layouts
        _time_ours(ours, prompt, 2, precision)
        best_hf = best_ours = 0.0
        same = None
        for _ in range(repeats):
            hf_tps, hf_ids = _time_hf(model, prompt, n)
            our_tps, our_ids = _time_ours(ours, prompt, n, precision)
            best_hf, best_ours = max(best_hf, hf_tps), max(best_ours, our_tps)
            same = hf_ids == our_ids
        print(f"  decoding {precision}, batch 1: transformers {best_hf:6.1f} tok/s   ours {best_ours:6.1f} tok/s   "
              f"{best_ours / best_hf:.2f}x (target >= 1.3x)   greedy ids {'identical' if same else 'differ'}",
              flush=True)
    hf.float()


def bench_prefill(hf, ours, tokens: int, repeats: int) -> None:
    ids = torch.randint(0, 49152, (1, tokens), generator=torch.Generator().manual_seed(2))
    decoder = decoder_for(ours)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        theirs = best(lambda: hf(ids, use_cache=True, logits_to_keep=1))
        mine = best(lambda: decoder.forward(ids, decoder.new_cache(1)))
    print(f"  prefill of {tokens} tokens, fp32: transformers {theirs * 1e3:7.1f} ms   ours {mine * 1e3:7.1f} ms   "
          f"{theirs / mine:.2f}x as fast (target >= 1x)", flush=True)


def bench_memory(folder: Path, weight_bytes: int) -> None:
    figures = {}
    for who in ("ours", "hf"):
        done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, who, str(folder)], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            print(f"  memory ({who}): the probe failed: {done.stderr.strip().splitlines()[-1:]}")
            return
        figures[who] = int(done.stdout.split()[-1])
    print(f"  resident memory gained by opening it (fp32, {weight_bytes / 1e6:.0f} MB of weights): "
          f"ours {figures['ours'] / 1e6:.0f} MB ({figures['ours'] / weight_bytes:.2f}x, target <= 1.3x)   "
          f"transformers {figures['hf'] / 1e6:.0f} MB ({figures['hf'] / weight_bytes:.2f}x)", flush=True)


def run(new_tokens: int, prompt_tokens: int, prefill_tokens: int, repeats: int) -> None:
    print(f"SmolLM2-135M shape ({json.dumps({k: v for k, v in SMOLLM2_135M.items() if 'size' in k or 'num' in k})}), "
          f"random weights, {new_tokens} new tokens after a {prompt_tokens}-token prompt:")
    with tempfile.TemporaryDirectory(prefix="llmp-bench-") as tmp:
        folder = Path(tmp)
        hf = _save_folder(folder)
        ours = open_model(folder, dtype="fp32").model
        weight_bytes = ours.num_params() * 4
        bench_decoding(hf, ours, new_tokens, prompt_tokens, repeats)
        bench_prefill(hf, ours, prefill_tokens, repeats)
        del ours, hf
        bench_memory(folder, weight_bytes)
