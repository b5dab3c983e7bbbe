"""`python -m engine models` and `python -m engine pull REPO_ID`: the models on this machine, and downloading one.

models [--gguf-dir DIR ...] [--json]
    every model in the Hugging Face cache (HF_HUB_CACHE / HF_HOME), read offline, then the GGUF files of LM Studio
    (~/.lmstudio/models, ~/.cache/lm-studio/models), Ollama (~/.ollama/models or $OLLAMA_MODELS) and the folders
    given with --gguf-dir or $LLM_PLAYGROUND_GGUF_DIRS: name, family (config.json's model_type, a GGUF file's
    architecture), parameters, size on disk, where it is (and a GGUF file's main tensor type), and whether this
    version can open it. --json prints a list of {"name", "kind", "path", "family", "n_params", "size_bytes",
    "supported", ...} (GGUF entries add "place" and "quantization").
pull REPO_ID [--revision REV] [--token TOKEN] [--json]
    downloads the files the engine needs (config and tokenizer JSON, chat templates, safetensors weights) into
    the Hugging Face cache, with a progress bar; HF_ENDPOINT and HF_TOKEN are honoured. Ctrl-C cancels (the
    files already complete stay in the cache; a file cut short is never kept). Offline: one line within ~2 s.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from engine.cli.errors import one_line_errors
from engine.cli.progress import ProgressPrinter
from engine.hub import download_model_job, hub_cache_dir
from engine.sources import GGUF, ModelEntry, list_models, supported_family


def register(subparsers: Any) -> None:
    p = one_line_errors(subparsers.add_parser(
        "models", help="list the models on this machine (Hugging Face cache, LM Studio, Ollama)",
        description="List the models on this machine (the Hugging Face cache, read offline; GGUF files of LM Studio, "
                    "Ollama and your folders) with their family, parameters and size. Open one by its name or "
                    "path: python -m engine generate NAME ..."))
    p.add_argument("--gguf-dir", action="append", default=[], metavar="DIR",
                   help="also list the GGUF files under DIR (repeatable; $LLM_PLAYGROUND_GGUF_DIRS adds more)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_models)

    p = one_line_errors(subparsers.add_parser(
        "pull", help="download a model from the Hugging Face hub",
        description="Download a model's config, tokenizer, chat template and safetensors weights into the Hugging "
                    "Face cache (HF_ENDPOINT and HF_TOKEN are honoured). Ctrl-C cancels; what was complete stays."))
    p.add_argument("repo_id", metavar="REPO_ID", help="a repo id such as openai-community/gpt2")
    p.add_argument("--revision", default="main", metavar="REV", help="branch, tag or commit (default main)")
    p.add_argument("--token", metavar="TOKEN", help="a Hugging Face token (default: HF_TOKEN or the saved login)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_pull)


def _size(n: float) -> str:
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{int(n)} B"


def _params(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _where(entry: ModelEntry) -> str:
    if entry.kind != GGUF:
        return "HF cache"
    quant = entry.details.get("quantization") or {}
    main = next(iter(quant), "?")  # the type of most parameters
    return f"{entry.details.get('place', 'folder')}, {main}"


def cmd_models(args: argparse.Namespace) -> int:
    for folder in args.gguf_dir:
        if not Path(folder).expanduser().is_dir():
            raise ValueError(f"--gguf-dir {folder} is not a folder")
    entries = list_models(args.gguf_dir)
    if args.json:
        print(json.dumps([{"name": e.name, "kind": e.kind, "path": str(e.path), "family": e.family,
                           "n_params": e.n_params, "size_bytes": e.size_bytes, "supported": supported_family(e.family),
                           **e.details} for e in entries]))
        return 0
    if not entries:
        print(f"no models in the Hugging Face cache ({hub_cache_dir()}) and no GGUF files in LM Studio's or Ollama's "
              "folders; python -m engine pull REPO_ID downloads one")
        return 0
    width = max(len(e.name) for e in entries)
    where = max(len(_where(e)) for e in entries)
    print(f"{'NAME':{width}}  {'FAMILY':10}  {'PARAMS':>7}  {'SIZE':>9}  {'WHERE':{where}}  OPENS HERE")
    for e in entries:
        opens = "yes" if supported_family(e.family) else "not yet"
        print(f"{e.name:{width}}  {e.family or '?':10}  {_params(e.n_params):>7}  {_size(e.size_bytes):>9}  "
              f"{_where(e):{where}}  {opens}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    # huggingface_hub logs each retry of a broken connection; the error we raise says it in one line.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    bar = ProgressPrinter()
    job = download_model_job(args.repo_id, revision=args.revision, token=args.token)
    folder: Path | None = None
    try:
        for item in job:
            if isinstance(item, Path):
                folder = item
            else:
                bar(item)
    except KeyboardInterrupt:
        job.close()  # stops the download worker at its next chunk
        print(f"download of {args.repo_id} cancelled; the files already complete stay in the cache", file=sys.stderr)
        return 130
    finally:
        bar.close()  # before any message: the bar's line is cleared first
    assert folder is not None
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if args.json:
        print(json.dumps({"repo_id": args.repo_id, "folder": str(folder), "size_bytes": size}))
    else:
        print(f"downloaded {args.repo_id} ({_size(size)}) -> {folder}")
    return 0
