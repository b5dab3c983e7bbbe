"""How the command line reports a user's mistake: one `error:` line on stderr, exit status 2."""
from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse report a bad flag as one `error:` line (exit 2) instead of usage + message."""
    def error(message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]
    return parser
