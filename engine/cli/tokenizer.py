"""`python -m engine tokenizer train|list`, `tokenize`, `import-hf` and `import-gguf`.

tokenizer train --corpus NAME|PATH --vocab-size N [--pattern gpt2|cl100k] --out FILE
    trains a byte-level BPE on a corpus and writes a tokenizer file (JSON) usable as --tokenizer FILE.
tokenizer list [--download]
    the named tiktoken encodings and whether they are available (offline: why not).
tokenize (--tokenizer NAME|FILE | --checkpoint MODEL) [--json] TEXT
    the tokens of TEXT ("-" reads stdin); --json prints {"ids": [...], "tokens": [...], "text": decoded}
    where each token is its display string (control characters and split UTF-8 bytes escaped). MODEL is a
    checkpoint, a Hugging Face model folder or a cached model's repo id.
import-hf DIR --out FILE
    a Hugging Face model folder (config.json; model.safetensors or a sharded model.safetensors.index.json;
    tokenizer.json or vocab.json + merges.txt) as a checkpoint.
import-gguf FILE --out FILE
    a GGUF file (llama.cpp, LM Studio, Ollama) as a checkpoint: its tensors dequantized once (to bf16 when the
    file's matrices are BF16, else fp32), its tokenizer and chat template kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.checkpoint import save_checkpoint
from engine.cli.errors import check_out, one_line_errors, safe
from engine.cli.progress import ProgressPrinter
from engine.data import load_corpus
from engine.events import ProgressEvent
from engine.gguf_import import load_gguf_job
from engine.hf_import import family_title, import_hf_folder, read_hf_config
from engine.sources import open_tokenizer
from engine.tokenizers import (
    MAX_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    NAMED_ENCODINGS,
    BPETrainedEvent,
    get_tokenizer,
    named_encoding_status,
    save_tokenizer,
    train_bpe_job,
)


def register(subparsers: Any) -> None:
    tok = subparsers.add_parser("tokenizer", help="train a BPE tokenizer, list named encodings")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    tok_sub.required = True

    p = one_line_errors(tok_sub.add_parser(
        "train", help="train a byte-level BPE on a corpus",
        description="Train a byte-level BPE (GPT-2 or GPT-4 pre-tokenization) and write a tokenizer file."))
    p.add_argument("--corpus", required=True, metavar="NAME|PATH", help="built-in corpus or a text file / folder")
    p.add_argument("--vocab-size", required=True, type=int, metavar="N",
                   help="tokens in all: the 256 bytes, the merges, and <|endoftext|>")
    p.add_argument("--pattern", choices=("gpt2", "cl100k"), default="gpt2",
                   help="pre-tokenization regex: GPT-2's or GPT-4's (cl100k) (default gpt2)")
    p.add_argument("--name", help="the tokenizer's name (default bpe-N-PATTERN)")
    p.add_argument("--out", required=True, metavar="FILE", help="tokenizer file to write (.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event")
    p.set_defaults(func=cmd_train)

    p = one_line_errors(tok_sub.add_parser("list", help="named tiktoken encodings and whether they are available"))
    p.add_argument("--download", action="store_true", help="fetch the ones not in the cache yet")
    p.set_defaults(func=cmd_list)

    p = one_line_errors(subparsers.add_parser(
        "tokenize", help="show how a tokenizer splits a text",
        description="Print the tokens of TEXT ('-' reads stdin). With tiktoken-style tokenizers special-token "
                    "text such as <|endoftext|> is encoded as ordinary text; a Hugging Face tokenizer.json turns "
                    "it into the special token's id, as transformers does."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", metavar="NAME|FILE",
                     help="gpt2, r50k_base, p50k_base, cl100k_base, o200k_base, a tokenizer file or a .tiktoken "
                          "file (char and bpe:N need --corpus)")
    src.add_argument("--checkpoint", metavar="MODEL",
                     help="use the tokenizer of a checkpoint, a Hugging Face model folder or a cached model's repo id")
    p.add_argument("--corpus", metavar="NAME|PATH", help="corpus for --tokenizer char or bpe:N")
    p.add_argument("--json", action="store_true", help='print {"ids": [...], "tokens": [...], "text": decoded}')
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_tokenize)

    p = one_line_errors(subparsers.add_parser(
        "import-hf", help="turn a Hugging Face model folder into a checkpoint",
        description="Read config.json, the safetensors weights (model.safetensors or the shards of "
                    "model.safetensors.index.json) and the tokenizer (tokenizer.json, else vocab.json + merges.txt) "
                    "from DIR and write one playground checkpoint (works offline). Supported: the GPT-2 family "
                    "and the llama family (model_type llama, qwen2, mistral)."))
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write (.safetensors)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_import_hf)

    p = one_line_errors(subparsers.add_parser(
        "import-gguf", help="turn a GGUF file into a checkpoint",
        description="Read a GGUF file (llama.cpp's format, as LM Studio and Ollama keep models: architectures llama, "
                    "qwen2, gpt2), dequantize its tensors once and write one playground checkpoint with its "
                    "tokenizer and chat template."))
    p.add_argument("file", metavar="FILE", help="a .gguf file")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write (.safetensors)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_import_gguf)


# ---------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    if not MIN_VOCAB_SIZE <= args.vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"--vocab-size must be between {MIN_VOCAB_SIZE} and {MAX_VOCAB_SIZE:,}")
    check_out(args.out, inputs=[args.corpus])
    bar = ProgressPrinter()
    result = None
    try:
        corpus = load_corpus(args.corpus, progress=None if args.json else bar)
        for event in train_bpe_job(corpus.documents, args.vocab_size, args.pattern, args.name):
            if args.json:
                print(json.dumps(event.to_json()), flush=True)
            elif isinstance(event, ProgressEvent):
                bar(event)
            if isinstance(event, BPETrainedEvent):
                result = event
    finally:
        bar.close()
    save_tokenizer(result.tokenizer, args.out)
    if not args.json:
        t = result.tokenizer
        print(f"trained {safe(t.name)}: {t.vocab_size:,} tokens on {corpus.num_chars:,} characters of "
              f"{safe(corpus.name)} in {result.seconds:.1f} s -> {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name, tok, reason in named_encoding_status(download=args.download):
        state = f"available, {tok.vocab_size:,} tokens" if tok is not None else reason.removeprefix(f"{name}: ")
        print(f"{name:12} {NAMED_ENCODINGS[name].description:45} {state}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.checkpoint:
        tokenizer = open_tokenizer(args.checkpoint)
    else:
        corpus_text = None
        if not args.corpus and (args.tokenizer == "char" or args.tokenizer.startswith("bpe:")):
            raise ValueError(f"--tokenizer {args.tokenizer} is built from a corpus: add --corpus NAME|PATH")
        if args.corpus:
            bar = ProgressPrinter()
            try:
                corpus_text = load_corpus(args.corpus, progress=bar).documents
            finally:
                bar.close()
        tokenizer = get_tokenizer(args.tokenizer, corpus_text)
    ids = tokenizer.encode(text)
    tokens = [tokenizer.render_token(i) for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "tokens": tokens, "text": tokenizer.decode(ids)}, ensure_ascii=False))
        return 0
    print(f"{len(ids)} tokens ({safe(tokenizer.describe())}), {len(text)} characters")
    for i, token in zip(ids, tokens):
        print(f"{i:>8}  '{token}'")  # quoted so leading spaces show
    return 0


def cmd_import_hf(args: argparse.Namespace) -> int:
    folder = Path(args.dir).expanduser()
    check_out(args.out, inputs=[str(p) for p in folder.iterdir() if p.is_file()] if folder.is_dir() else [])
    # The weights' own format (a bf16 model makes a bf16 checkpoint); checkpoints open in fp32.
    model, tokenizer = import_hf_folder(args.dir, dtype="auto")
    family = family_title(read_hf_config(args.dir))
    save_checkpoint(args.out, model, tokenizer)
    summary = {"out": args.out, "params": model.num_params(), "model_config": model.config.to_dict(),
               "tokenizer": tokenizer.describe()}
    if args.json:
        print(json.dumps(summary))
    else:
        c = model.config
        print(f"imported {family} ({model.num_params():,} parameters, {c.n_layers} layers, {c.emb_dim} wide, "
              f"context {c.context_length}) with {tokenizer.describe()} -> {args.out}")
    return 0


def cmd_import_gguf(args: argparse.Namespace) -> int:
    check_out(args.out, inputs=[args.file])
    bar = ProgressPrinter()
    job = load_gguf_job(args.file)
    try:
        while True:
            try:
                bar(next(job))
            except StopIteration as stop:
                model, tokenizer = stop.value
                break
    finally:
        bar.close()
    save_checkpoint(args.out, model, tokenizer)
    c = model.config
    summary = {"out": args.out, "params": model.num_params(), "model_config": c.to_dict(),
               "tokenizer": tokenizer.describe()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"imported {Path(args.file).name} ({model.num_params():,} parameters, {c.n_layers} layers, "
              f"{c.emb_dim} wide, context {c.context_length}) with {tokenizer.describe()} -> {args.out}")
    return 0

