"""How the command line reports a user's mistake: one `error:` line on stderr, exit status 2.

`OneLineParser` is the argparse parser of every command (sub-parsers inherit it), so a bad flag anywhere,
at the top level too, is one line instead of a usage block and a message. `check_out` refuses an output
path that would overwrite one of the command's own inputs, and finds a full or read-only folder before any
work is done. `safe` escapes text from files (names in a checkpoint's metadata) for the terminal.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from engine.files import check_folder_writable
from engine.validate import printable

TEXT_SUFFIXES = (".txt", ".md", ".py")


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def one_line_error(message: str) -> None:
    """Print `error: message` (control characters escaped, cut to one screen line's worth)."""
    print(f"error: {printable(message, 600)}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """argparse, reporting a bad flag as one `error:` line (exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        one_line_error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse report a bad flag as one `error:` line (exit 2) instead of usage + message."""
    def error(message: str):
        one_line_error(f"{message} (see --help)")
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]
    return parser


def safe(text: object, limit: int = 300) -> str:
    """Text from a file, safe to print: control characters (ANSI escapes, newlines) escaped, length cut."""
    return printable(str(text), limit)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_out(out: str, flag: str = "--out", inputs: Iterable[str | None] = ()) -> Path:
    """The output path, checked before any work: not a folder, in a folder that exists and can really be
    written (a read-only or full disk is found now, not after training), and not one of `inputs` (a corpus
    file or folder, a tokenizer file), which it would silently replace."""
    path = Path(out).expanduser()
    if not str(out).strip():
        raise CLIError(f"{flag} needs a file name")
    if path.is_dir():
        raise CLIError(f"{flag} {safe(out)} is a folder; give a file name such as model.safetensors")
    if not path.parent.is_dir():
        raise CLIError(f"{flag} {safe(out)}: the folder {safe(path.parent)} does not exist")
    for given in inputs:
        if not given or not Path(given).expanduser().exists():
            continue
        source = Path(given).expanduser()
        if source.is_dir():
            inside = path.resolve().is_relative_to(source.resolve())
            if inside and path.suffix.lower() in TEXT_SUFFIXES:
                raise CLIError(f"{flag} {safe(out)} is inside the corpus folder {safe(given)} and would become "
                               "part of it; write it somewhere else")
        elif path.exists() and _same_file(path, source) or path.resolve() == source.resolve():
            raise CLIError(f"{flag} {safe(out)} is the input file {safe(given)}: writing it would replace "
                           "the input; choose another file name")
    try:
        check_folder_writable(path)
    except OSError as e:
        raise CLIError(str(e)) from None
    return path
