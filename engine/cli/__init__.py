"""The command line: `python -m engine COMMAND ...`.

Each group of commands lives in its own module with a `register(subparsers)` function that adds
its sub-parsers and sets `func` on them; this file only wires them together and turns every
user-facing error into one clear line on stderr (never a traceback): bad input exits with status 2,
running out of memory too (with what would fit); anything unforeseen is reported in one line as an
internal error with status 1.
"""
from __future__ import annotations

import sys

from engine.cli import bench, generate, inspect, models, tokenizer, train
from engine.cli.errors import CLIError, OneLineParser, one_line_error
from engine.files import first_line
from engine.memory import is_out_of_memory, out_of_memory_message

# Each adds its commands: train/info, generate, inspect, tokenizer/tokenize/import-hf, models/pull, bench.
COMMAND_MODULES = (train, generate, inspect, tokenizer, models, bench)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m engine",
        description="LLM Playground's engine: train, inspect and sample small GPTs from the command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # sub-parsers are OneLineParsers too
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
        one_line_error(first_line(e))
        return 2
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            one_line_error(f"internal error ({type(e).__name__}): {first_line(e)}")
            return 1
        one_line_error(out_of_memory_message(e, f"'{args.command}'"))
        return 2
    except Exception as e:  # a bug: still one line, and a status that says it was not the user's input
        one_line_error(f"internal error ({type(e).__name__}): {first_line(e)}")
        return 1
