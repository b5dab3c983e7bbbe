"""`python -m engine bench tokenizer`: our BPE training and encoding against the libraries, same text, same run.

Training: `engine.bpe.train_bpe` (everything a user waits for: chunking, the trainer, turning its merges
into tiktoken ranks, building the Encoding) against Hugging Face `tokenizers`' BpeTrainer alone with the
same pre-tokenizer, alphabet and vocab size. Encoding: our tokenizer's `encode` against the very
`tiktoken.Encoding` it wraps (the wrapper's overhead) and against `tokenizers`' encoder.
Figures are printed, not asserted: timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from engine.data import load_corpus
from engine.tokenizers.training import _chunks, _hf_tokenizer, _hf_trainer, train_bpe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=float, default=5.0, help="megabytes of text to train on (default 5)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocab size (default 4096)")
    parser.add_argument("--pattern", choices=("gpt2", "cl100k"), default="gpt2",
                        help="pre-tokenization pattern (default gpt2)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs of each (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")


def bench_text(size_mb: float) -> str:
    """About size_mb of text: Python's docs and standard library (built in), repeated if needed."""
    base = load_corpus("python-docs").text() + "\n\n" + load_corpus("python-source").text()
    n = int(size_mb * 1_000_000)
    return (base * (n // len(base) + 1))[:n]


def _best(fn, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(args: argparse.Namespace) -> int:
    size_mb = getattr(args, "size_mb", 5.0)
    vocab_size = getattr(args, "vocab_size", 4096)
    pattern = getattr(args, "pattern", "gpt2")
    repeats = getattr(args, "repeats", 1)
    text = bench_text(size_mb)
    chunks = list(_chunks([text]))

    def hf_train():
        tok = _hf_tokenizer(pattern)
        tok.train_from_iterator(chunks, _hf_trainer(vocab_size))
        return tok

    hf_s, hf_tok = _best(hf_train, repeats)
    ours_s, ours_tok = _best(lambda: train_bpe(text, vocab_size, pattern), repeats)

    sample = text[: 2_000_000]
    enc_ours_s, ids = _best(lambda: ours_tok.encode(sample), repeats)
    enc_tt_s, _ = _best(lambda: ours_tok.encoding.encode_ordinary(sample), repeats)
    sample_chunks = list(_chunks([sample]))
    enc_hf_s, _ = _best(lambda: hf_tok.encode_batch(sample_chunks), repeats)
    figures = {
        "text_mb": len(text.encode()) / 1e6, "vocab_size": ours_tok.vocab_size, "pattern": pattern,
        "train_ours_s": ours_s, "train_tokenizers_s": hf_s, "train_ratio": ours_s / hf_s,
        "encode_mb": len(sample.encode()) / 1e6, "encode_tokens": len(ids),
        "encode_ours_s": enc_ours_s, "encode_tiktoken_s": enc_tt_s, "encode_ratio": enc_ours_s / enc_tt_s,
        "encode_tokenizers_s": enc_hf_s,
    }
    if getattr(args, "json", False):
        print(json.dumps(figures))
        return 0
    f = figures
    print(f"BPE training on {f['text_mb']:.1f} MB, vocab {vocab_size}, {pattern} pattern")
    print(f"  ours (engine.bpe.train_bpe)   {f['train_ours_s']:7.2f} s")
    print(f"  Hugging Face tokenizers       {f['train_tokenizers_s']:7.2f} s")
    print(f"  ratio ours / tokenizers       {f['train_ratio']:7.2f}x   (target: within 3x)")
    print(f"Encoding {f['encode_mb']:.1f} MB ({f['encode_tokens']:,} tokens)")
    print(f"  ours (TiktokenTokenizer)      {f['encode_ours_s']:7.3f} s  "
          f"({f['encode_mb'] / f['encode_ours_s']:.1f} MB/s)")
    print(f"  tiktoken Encoding itself      {f['encode_tiktoken_s']:7.3f} s")
    print(f"  ratio ours / tiktoken         {f['encode_ratio']:7.2f}x")
    print(f"  Hugging Face tokenizers       {f['encode_tokenizers_s']:7.3f} s  (batch, same text)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.tokenizer")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
