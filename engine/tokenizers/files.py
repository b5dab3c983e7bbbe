"""Tokenizer files: our own JSON format (any tokenizer's `to_dict`) and `.tiktoken` ranks files."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from engine.files import atomic_write_text, first_line, read_regular
from engine.tokenizers.base import Tokenizer, tokenizer_from_dict
from engine.tokenizers.bpe import ENDOFTEXT, GPT2_PATTERN, TiktokenTokenizer, ranks_from_text
from engine.tokenizers.named import NAMED_ENCODINGS
from engine.validate import parse_json

TOKENIZER_FILE_FORMAT = "llm-playground-tokenizer"
MAX_TOKENIZER_FILE_BYTES = 256 * 1024 * 1024


def load_tiktoken_file(path: str | os.PathLike) -> TiktokenTokenizer:
    """A local `.tiktoken` ranks file. A copy of a named encoding's file (same sha256) gets that
    encoding's pattern and special tokens; any other gets GPT-2's pattern and <|endoftext|> after its tokens."""
    path = Path(path).expanduser()
    try:
        data = read_regular(path, MAX_TOKENIZER_FILE_BYTES, "tokenizer file")
    except OSError as e:
        raise ValueError(first_line(e)) from None
    ranks = ranks_from_text(data, path.name)
    digest = hashlib.sha256(data).hexdigest()
    for spec in NAMED_ENCODINGS.values():
        if len(spec.files) == 1 and spec.files[0][1] == digest:
            return TiktokenTokenizer.from_ranks(spec.name, ranks, spec.pattern, spec.special_tokens)
    special = {ENDOFTEXT: max(ranks.values()) + 1} if ranks else {}
    return TiktokenTokenizer.from_ranks(path.stem, ranks, GPT2_PATTERN, special)


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write a tokenizer to a JSON file (atomically), readable by `load_tokenizer_file`."""
    path = Path(path).expanduser()
    data = {"format": TOKENIZER_FILE_FORMAT, "version": 1, "tokenizer": tokenizer.to_dict()}
    try:
        # A temporary file of a fresh random name in the same folder, renamed over `path`: never a fixed
        # name that a planted symlink could redirect, and an existing file survives a failure.
        atomic_write_text(path, json.dumps(data))
    except OSError as e:
        if not e.strerror:  # already one line naming the file
            raise
        raise OSError(f"cannot write {path}: {e.strerror}") from None


def load_tokenizer_file(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a file written by `save_tokenizer`, or a `.tiktoken` ranks file."""
    path = Path(path).expanduser()
    if path.suffix == ".tiktoken":
        return load_tiktoken_file(path)
    try:
        data = parse_json(read_regular(path, MAX_TOKENIZER_FILE_BYTES, "tokenizer file").decode("utf-8"), path.name)
    except FileNotFoundError:
        raise ValueError(f"no such tokenizer file: {path}") from None
    except OSError as e:
        raise ValueError(first_line(e)) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path.name} is not a tokenizer file ({first_line(e, 120)})") from None
    if not isinstance(data, dict) or data.get("format") != TOKENIZER_FILE_FORMAT:
        raise ValueError(f"{path.name} is not an LLM Playground tokenizer file")
    if data.get("version") != 1:
        raise ValueError(f"{path.name}: unsupported tokenizer file version {str(data.get('version'))[:20]!r}")
    return tokenizer_from_dict(data.get("tokenizer"))
