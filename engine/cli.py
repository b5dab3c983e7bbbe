"""The command line: `python -m engine COMMAND ...`.

Each group of commands lives in its own module with a `register(subparsers)` function that adds
its sub-parsers and sets `func` on them; this file only wires them together and turns every
user-facing error into one clear line on stderr (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add commands: train/info, generate, tokenizer/tokenize/import-hf, bench.
COMMAND_MODULES = ("engine.cli_train", "engine.cli_generate", "engine.cli_tokenizer", "engine.bench")


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse report a bad flag as one `error:` line (exit 2) instead of usage + message."""
    def error(message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="LLM Playground's engine: train, inspect and sample small GPTs from the command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that command group is not written yet
                continue
            raise
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
