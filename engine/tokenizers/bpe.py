"""Byte-level BPE on tiktoken: GPT-2's byte alphabet, ranks files, and the `TiktokenTokenizer`.

A BPE here is a `tiktoken.Encoding` (ranks + pre-tokenization pattern + special tokens), whatever made
it: trained on a corpus (engine/tokenizers/training.py), imported from a Hugging Face vocab.json +
merges.txt, read from a `.tiktoken` file, or one of tiktoken's named encodings.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import regex
import tiktoken

from engine.files import first_line, read_regular
from engine.tokenizers.base import Tokenizer
from engine.validate import parse_json

# Pre-tokenization patterns: text is split into pieces by these before BPE runs inside each piece.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PATTERNS = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN}
ENDOFTEXT = "<|endoftext|>"
MAX_BPE_TOKENS = 1_000_000
MAX_SPECIAL_TOKENS = 10_000
MAX_SPECIAL_TEXT_CHARS = 1024
MAX_PATTERN_CHARS = 16_384
MAX_NAME_CHARS = 256
# Text the pre-tokenization pattern must split without trouble before a tokenizer is accepted.
_PROBE_TEXT = "Hello, world! It's 2024:\n\tx = [1, 2.5e-3] # ünïcødé 中文 🙂  \r\n  end"
# The pattern check's text: the probe plus every printable ASCII character, each alone and in a run.
_PATTERN_PROBE = _PROBE_TEXT + "".join(f" {c}{c}{c} {c}" for c in map(chr, range(32, 127)))
_REPLACEMENT = "\ufffd".encode()
MAX_HF_FILE_BYTES = 256 * 1024 * 1024


class TokenizerUnavailable(ValueError):
    """A tokenizer that can't be had right now (e.g. a named encoding offline); the message is the reason."""


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: char -> byte.

    GPT-2 (and Hugging Face's ByteLevel) write each byte of a token as one printable character, so
    a space is "Ġ" and a newline "Ċ"; vocab.json and merges.txt hold those strings.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """Mergeable ranks in the `.tiktoken` file format: one "base64(token) rank" line each."""
    return "".join(f"{base64.b64encode(t).decode('ascii')} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1]))


def ranks_from_text(text: str | bytes, source: str = "ranks") -> dict[bytes, int]:
    """Parse the `.tiktoken` format (as tiktoken.load.load_tiktoken_bpe does, without its cache)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise ValueError(f"{source}: line {number} is not 'base64 rank'") from None
    return ranks


def _is_panic(error: BaseException) -> bool:
    # tiktoken's Rust core reports a panic as pyo3's PanicException, a BaseException subclass.
    return type(error).__name__ == "PanicException"


def _check_special_tokens(special_tokens: dict[str, int], source: str) -> None:
    if len(special_tokens) > MAX_SPECIAL_TOKENS:
        raise ValueError(f"{source}: more than {MAX_SPECIAL_TOKENS:,} special tokens")
    ids = set()
    for text, token_id in special_tokens.items():
        if not isinstance(text, str) or not 0 < len(text) <= MAX_SPECIAL_TEXT_CHARS:
            raise ValueError(f"{source}: a special token's text must be 1 to {MAX_SPECIAL_TEXT_CHARS:,} characters")
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < 2 * MAX_BPE_TOKENS:
            raise ValueError(f"{source}: special token id {str(token_id)[:20]} is out of range "
                             f"(0 to {2 * MAX_BPE_TOKENS - 1:,})")
        if token_id in ids:
            raise ValueError(f"{source}: two special tokens share the id {token_id}")
        ids.add(token_id)


def _check_pattern(pattern: str, source: str) -> None:
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_CHARS:
        raise ValueError(f"{source}: the pre-tokenization pattern must be 1 to {MAX_PATTERN_CHARS:,} characters")
    # A pattern that can match empty text makes tiktoken's Rust core panic, which prints a Rust backtrace on the
    # terminal before Python can catch it; the `regex` package (tiktoken's own Python dependency, the same
    # syntax as its Rust engine for these patterns) finds such a pattern first. A pattern `regex` cannot read
    # is left to tiktoken, which refuses it or is caught by the probe in from_ranks.
    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError):
        return
    try:
        empty = compiled.fullmatch("", timeout=1.0) is not None or any(
            m.start() == m.end() for m in compiled.finditer(_PATTERN_PROBE, timeout=1.0))
    except TimeoutError:
        raise ValueError(f"{source}: the pre-tokenization pattern is unusable (too slow on a short text)") from None
    if empty:
        raise ValueError(f"{source}: the pre-tokenization pattern is unusable (it can match empty text)")


def _check_ranks(ranks: dict[bytes, int], special_tokens: dict[str, int], source: str) -> None:
    """Refuse what tiktoken would choke on (a missing byte makes its Rust core panic)."""
    _check_special_tokens(special_tokens, source)
    if not ranks:
        raise ValueError(f"{source}: no tokens")
    if len(ranks) > MAX_BPE_TOKENS:
        raise ValueError(f"{source}: {len(ranks):,} tokens is more than the {MAX_BPE_TOKENS:,} allowed")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{source}: not a byte-level BPE (byte 0x{missing[0]:02x} has no token)")
    values = list(ranks.values())
    if len(set(values)) != len(values):
        raise ValueError(f"{source}: two tokens share a rank")
    if min(values) < 0 or max(values) >= MAX_BPE_TOKENS:
        raise ValueError(f"{source}: a rank is out of range")
    clash = set(special_tokens.values()) & set(values)
    if clash:
        raise ValueError(f"{source}: special token id {min(clash)} is also an ordinary token")


class TiktokenTokenizer(Tokenizer):
    """Byte-level BPE run by tiktoken: trained, imported, read from a .tiktoken file, or a named encoding.

    Ids are tiktoken's ranks. `encode` treats special-token text as ordinary text (see the module
    docstring); `eot_id` is the id of "<|endoftext|>" where the encoding has it.
    """

    def __init__(self, encoding, *, ranks: dict[bytes, int] | None = None, named: bool = False,
                 name: str | None = None):
        self.encoding = encoding
        self.named = named
        self.name = name or encoding.name
        self._ranks = ranks
        self.eot_id = encoding.encode_single_token(ENDOFTEXT) if ENDOFTEXT in encoding.special_tokens_set else None
        self._merges: list[tuple[int, bytes, bytes, bytes]] | None = None

    @classmethod
    def from_ranks(cls, name: str, ranks: dict[bytes, int], pattern: str,
                   special_tokens: dict[str, int] | None = None) -> TiktokenTokenizer:
        special_tokens = dict(special_tokens or {})
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"a tokenizer name must be text of at most {MAX_NAME_CHARS} characters")
        _check_pattern(pattern, name)
        _check_ranks(ranks, special_tokens, name)
        try:
            encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)
            encoding.encode_ordinary(_PROBE_TEXT)  # a pattern that can match nothing panics here, not later
        except (ValueError, OverflowError) as e:  # e.g. a pattern the regex engine refuses
            raise ValueError(f"{name}: tiktoken refused the tokenizer ({str(e)[:200]})") from None
        except BaseException as e:
            if not _is_panic(e):
                raise
            raise ValueError(f"{name}: the pre-tokenization pattern is unusable (it can match empty text)") from None
        return cls(encoding, ranks=ranks, name=name)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def pattern(self) -> str:
        return self.encoding._pat_str

    @property
    def special_tokens(self) -> dict[str, int]:
        return {t: self.encoding.encode_single_token(t) for t in self.encoding.special_tokens_set}

    @property
    def ranks(self) -> dict[bytes, int]:
        if self._ranks is None:
            self._ranks = dict(self.encoding._mergeable_ranks)  # tiktoken keeps them; it has no public getter
        return self._ranks

    def encode(self, text: str) -> list[int]:
        # encode_ordinary == encode(disallowed_special=(), allowed_special=()): special text stays text.
        try:
            return self.encoding.encode_ordinary(text)
        except BaseException as e:  # a hostile pattern that passed the probe may still panic on some text
            if not _is_panic(e):
                raise
            raise ValueError(f"{self.name}: the tokenizer's pre-tokenization pattern failed on this text") from None

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self.encoding.decode_single_token_bytes(int(token_id))
        except (KeyError, ValueError, OverflowError):
            return _REPLACEMENT  # an id the model may produce but the tokenizer doesn't have

    def decode_bytes(self, ids: list[int]) -> bytes:
        ids = [int(i) for i in ids]
        try:
            return self.encoding.decode_bytes(ids)
        except (KeyError, ValueError, OverflowError):
            return b"".join(self.token_bytes(i) for i in ids)

    def describe(self) -> str:
        return f"{self.name} (byte-level BPE, {self.vocab_size:,} tokens)"

    def to_dict(self) -> dict[str, Any]:
        if self.named:
            return {"type": "tiktoken", "encoding": self.name}
        return {"type": "tiktoken", "name": self.name, "pattern": self.pattern,
                "special_tokens": self.special_tokens, "ranks": ranks_to_text(self.ranks)}


    def merges(self) -> list[tuple[int, bytes, bytes, bytes]]:
        """(rank, left, right, merged) for every multi-byte token, in rank order (see engine.bpe.merges_table)."""
        if self._merges is None:
            self._merges = _recover_merges(self.ranks)
        return self._merges


BPETokenizer = TiktokenTokenizer


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Split `token` with only the merges ranked below max_rank (what BPE had learned before it)."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[int, bytes, bytes, bytes]]:
    """The merge that made each token: BPE on its bytes with the earlier merges leaves exactly two parts."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda x: x[1]):
        if len(token) < 2:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1], token))
    return merges


def tokenizer_from_hf_files(vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> TiktokenTokenizer:
    """A GPT-2-style byte-level BPE from Hugging Face's vocab.json + merges.txt, as a tiktoken Encoding.

    Ids stay the vocab's ids (tiktoken's ranks), so they equal transformers' GPT-2 tokenizer; tokens that
    are neither a byte nor a merge result (e.g. "<|endoftext|>") become special tokens.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    try:
        vocab = parse_json(read_regular(vocab_path, MAX_HF_FILE_BYTES, "vocab.json").decode("utf-8"), "vocab.json")
        merge_lines = read_regular(merges_path, MAX_HF_FILE_BYTES, "merges.txt").decode("utf-8").splitlines()
    except FileNotFoundError as e:
        raise ValueError(f"the tokenizer needs {Path(e.filename or '?').name} next to the model") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"cannot read the Hugging Face tokenizer files: {first_line(e)}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError("vocab.json must map token strings to ids")
    decoder = gpt2_byte_decoder()

    def to_bytes(token: str) -> bytes:
        try:
            return bytes(decoder[c] for c in token)
        except KeyError:
            raise ValueError(f"merges.txt has {token!r}, which is not a byte-level token") from None

    ranks: dict[bytes, int] = {}
    for token, token_id in vocab.items():
        if len(token) == 1 and token in decoder:
            ranks[bytes([decoder[token]])] = token_id
    last_id = -1
    for number, line in enumerate(merge_lines, 1):
        if not line or line.startswith("#version"):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ValueError(f"merges.txt line {number} is not two tokens")
        merged = "".join(pair)
        if merged not in vocab:
            raise ValueError(f"merges.txt line {number}: {merged!r} is not in vocab.json")
        merged_bytes = to_bytes(pair[0]) + to_bytes(pair[1])
        if merged_bytes in ranks:
            continue  # the same token made again by a later merge: the first one wins (as in tiktoken)
        if vocab[merged] <= last_id:
            # tiktoken ranks merges by token id; that only reproduces the merge order if ids grow with it.
            raise ValueError(f"merges.txt line {number}: token ids do not follow the merge order")
        last_id = vocab[merged]
        ranks[merged_bytes] = vocab[merged]
    ordinary = set(ranks.values())
    special = {token: i for token, i in vocab.items() if i not in ordinary}
    return TiktokenTokenizer.from_ranks(f"hf:{vocab_path.parent.name or 'tokenizer'}", ranks, GPT2_PATTERN, special)
