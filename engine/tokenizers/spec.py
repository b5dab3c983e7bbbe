"""The one parser of tokenizer specs, as the command line and the app write them."""
from __future__ import annotations

from pathlib import Path

from engine.tokenizers.base import CharTokenizer, Tokenizer
from engine.tokenizers.bpe import PATTERNS
from engine.tokenizers.files import load_tokenizer_file
from engine.tokenizers.named import NAMED_ENCODINGS, load_named_encoding, named_encoding_problem
from engine.tokenizers.training import train_bpe

TOKENIZER_SPECS_HELP = ("char, bpe:N or bpe:N:cl100k (trained on the corpus), a tokenizer file, or "
                        + ", ".join(NAMED_ENCODINGS))


def parse_bpe_spec(spec: str) -> tuple[int, str] | None:
    """(vocab size, pattern) of `bpe:N` or `bpe:N:PATTERN`; None for a spec that is not a BPE to train.

    Jobs that train the BPE themselves (to report progress) read the spec here, so it is parsed one way."""
    spec = spec.strip()
    if not spec.startswith("bpe:"):
        return None
    parts = spec.split(":")
    pattern = parts[2] if len(parts) == 3 else "gpt2"
    if len(parts) not in (2, 3) or not parts[1].isdigit() or pattern not in PATTERNS:
        raise ValueError(f"bad tokenizer {spec!r}: write bpe:N or bpe:N:cl100k, e.g. bpe:4096")
    return int(parts[1]), pattern


def get_tokenizer(spec: str, corpus_text: str | list[str] | None = None) -> Tokenizer:
    """A tokenizer from a command-line / GUI spec.

    char                      a character vocabulary from `corpus_text`
    bpe:N or bpe:N:cl100k     a byte-level BPE of N tokens trained on `corpus_text` (GPT-2 or cl100k pattern)
    FILE                      a tokenizer file (save_tokenizer) or a .tiktoken file
    gpt2, r50k_base, p50k_base, cl100k_base, o200k_base   a named tiktoken encoding
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a tokenizer is needed: {TOKENIZER_SPECS_HELP}")
    spec = spec.strip()
    if spec == "char":
        if corpus_text is None:
            raise ValueError("the char tokenizer needs a corpus to take its characters from")
        text = corpus_text if isinstance(corpus_text, str) else "".join(corpus_text)
        return CharTokenizer.from_text(text)
    bpe = parse_bpe_spec(spec)
    if bpe is not None:
        if corpus_text is None:
            raise ValueError("bpe:N trains on the corpus, and no corpus was given")
        return train_bpe(corpus_text, bpe[0], pattern=bpe[1])
    if spec in NAMED_ENCODINGS:
        return load_named_encoding(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_tokenizer_file(path)
    raise ValueError(f"unknown tokenizer {spec!r}: choose {TOKENIZER_SPECS_HELP}")


def tokenizer_problem(spec: str, *, connect: bool = True) -> str | None:
    """Why `get_tokenizer(spec)` would fail for want of something (a download, a file), or None when it can
    be built, checked without building it: a named encoding that is not cached needs the network
    (`named_encoding_problem`; `connect=False` never goes to the network), a file must exist, a bpe spec must
    parse. (char and bpe still need a corpus, which the run brings.)"""
    if not isinstance(spec, str) or not spec.strip():
        return f"a tokenizer is needed: {TOKENIZER_SPECS_HELP}"
    spec = spec.strip()
    if spec == "char":
        return None
    try:
        if parse_bpe_spec(spec) is not None:
            return None
    except ValueError as e:
        return str(e)
    if spec in NAMED_ENCODINGS:
        return named_encoding_problem(spec, connect=connect)
    if Path(spec).expanduser().is_file():
        return None
    return f"unknown tokenizer {spec[:200]!r}: choose {TOKENIZER_SPECS_HELP}"
