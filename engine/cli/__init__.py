"""The command line: `python -m engine COMMAND ...`.

Each group of commands lives in its own module with a `register(subparsers)` function that adds
its sub-parsers and sets `func` on them; this file only wires them together and turns every
user-facing error into one clear line on stderr (never a traceback).
"""
from __future__ import annotations

import argparse
import sys

from engine.cli import bench, generate, inspect, models, tokenizer, train
from engine.cli.errors import CLIError

# Each adds its commands: train/info, generate, inspect, tokenizer/tokenize/import-hf, models/pull, bench.
COMMAND_MODULES = (train, generate, inspect, tokenizer, models, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="LLM Playground's engine: train, inspect and sample small GPTs from the command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
