"""Tokenizer files: our own JSON format (any tokenizer's `to_dict`) and `.tiktoken` ranks files."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from engine.files import atomic_write_text
from engine.tokenizers.base import Tokenizer, tokenizer_from_dict
from engine.tokenizers.bpe import ENDOFTEXT, GPT2_PATTERN, TiktokenTokenizer, ranks_from_text
from engine.tokenizers.named import NAMED_ENCODINGS

TOKENIZER_FILE_FORMAT = "llm-playground-tokenizer"


def load_tiktoken_file(path: str | os.PathLike) -> TiktokenTokenizer:
    """A local `.tiktoken` ranks file. A copy of a named encoding's file (same sha256) gets that
    encoding's pattern and special tokens; any other gets GPT-2's pattern and <|endoftext|> after its tokens."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no such tokenizer file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name} is not a tokenizer file ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != TOKENIZER_FILE_FORMAT:
        raise ValueError(f"{path.name} is not an LLM Playground tokenizer file")
    if data.get("version") != 1:
        raise ValueError(f"{path.name}: unsupported tokenizer file version {data.get('version')!r}")
    return tokenizer_from_dict(data.get("tokenizer"))
