"""`python -m engine bench WHAT [flags]`: speed benchmarks that print figures (they are not tests).

Each benchmark lives in its own module with `run(args) -> int` and, optionally, `add_arguments(parser)`
for its flags. Modules are imported only when their benchmark runs (an import inside a function, on
purpose): their heavy imports (transformers) never slow down other commands.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any

from engine.cli.errors import one_line_errors

BENCHMARKS = {
    "train": ("engine.bench.train", "a training step of our GPT against transformers' GPT2LMHeadModel"),
    "tokenizer": ("engine.bench.tokenizer", "tokenizer encoding speed"),
    "generate": ("engine.bench.generate", "generation speed"),
    "inspect": ("engine.bench.inspect", "the logit lens and the head sweep against plain forward passes"),
}


class BenchUnavailable(ValueError):
    """No benchmark was named, or its module is missing from this installation."""


def register(subparsers: Any) -> None:
    lines = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in BENCHMARKS.items())
    p = subparsers.add_parser(
        "bench", help="speed benchmarks (train, tokenizer, generate, inspect)",
        description=f"Speed benchmarks; they print figures.\n\n{lines}\n\n"
                    "`python -m engine bench WHAT --help` lists the flags of one benchmark.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=list(BENCHMARKS), metavar="WHAT", help=", ".join(BENCHMARKS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    one_line_errors(p)
    p.set_defaults(func=run_bench)


def _load(what: str):
    module_name = BENCHMARKS[what][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise BenchUnavailable(f"the '{what}' benchmark is not available "
                                   f"({module_name.replace('.', '/')}.py is missing from this installation)") from None
        raise


def run_bench(args: argparse.Namespace) -> int:
    if args.what is None:
        raise BenchUnavailable(f"name a benchmark: python -m engine bench {{{','.join(BENCHMARKS)}}} [flags]")
    module = _load(args.what)
    parser = argparse.ArgumentParser(prog=f"python -m engine bench {args.what}",
                                     description=f"Benchmark: {BENCHMARKS[args.what][1]}.")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    one_line_errors(parser)  # one line, like the rest of the command line
    return int(module.run(parser.parse_args(args.args)) or 0)
