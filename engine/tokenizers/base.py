"""The tokenizer interface (encode, decode, per-token bytes and display, JSON state), its registry, and
the character tokenizer. See the package docstring for the kinds and the special-token policy."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

MAX_CHARS = 1_000_000  # a char vocabulary (the model's vocab_size bounds it further)
# Each tokenizer class registers a loader for its "type" tag here.
_LOADERS: dict[str, Callable[[dict[str, Any]], Tokenizer]] = {}


def register(type_name: str):
    """Register how to rebuild a tokenizer whose `to_dict()` has this "type": a Tokenizer class (its
    `from_dict`) or a plain loader function."""
    def wrap(target):
        if isinstance(target, type):
            target.type_name = type_name
            _LOADERS[type_name] = target.from_dict
        else:
            _LOADERS[type_name] = target
        return target
    return wrap


def render_bytes(data: bytes) -> str:
    """A token's bytes as text a person can read: control characters and broken UTF-8 escaped."""
    text = data.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in text:
        if ch == "\\" or ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class Tokenizer(ABC):
    """Turns text into token ids and back."""

    UNKNOWN_TEXT = "\ufffd"  # what a character the tokenizer cannot represent decodes to

    type_name: str = ""
    name: str = ""
    eot_id: int | None = None  # the end-of-text token's id, if the tokenizer has one

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of the text, special-token strings treated as ordinary text."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for."""

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; a split UTF-8 character becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def render_token(self, token_id: int) -> str:
        """A display string for one token (control characters escaped, as minbpe)."""
        return render_bytes(self.token_bytes(token_id))

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, with a "type" key, enough to rebuild the tokenizer."""

    def describe(self) -> str:
        return f"{self.name} ({self.vocab_size:,} tokens)"


@register("char")
class CharTokenizer(Tokenizer):
    """One token per character; the vocabulary is the corpus's characters, sorted.

    Id 0 is reserved for characters the corpus never had: they encode to it and it decodes to
    U+FFFD, so any text can be encoded; text made only of known characters round-trips exactly.
    """

    UNKNOWN = "\ufffd"

    def __init__(self, chars: str | list[str]):
        chars = sorted(set(chars) - {self.UNKNOWN})
        self.chars = [self.UNKNOWN] + chars
        self._ids = {c: i for i, c in enumerate(self.chars)}
        self.name = "char"

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        n = len(chars)
        return "".join(chars[i] if 0 <= i < n else self.UNKNOWN for i in map(int, ids))

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self.chars):
            return self.UNKNOWN.encode()
        return self.chars[token_id].encode("utf-8", errors="surrogatepass")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": "".join(self.chars[1:])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        chars = data.get("chars")
        if set(data) != {"type", "chars"} or not isinstance(chars, str):
            raise ValueError("char tokenizer state needs a 'chars' string (and nothing else)")
        if len(chars) > MAX_CHARS:
            raise ValueError(f"char tokenizer state has {len(chars):,} characters, more than the {MAX_CHARS:,} allowed")
        return cls(chars)


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The distinct characters of `text` this tokenizer cannot give back (a char tokenizer's unknown id,
    a lone surrogate in a byte-level BPE): they come out as U+FFFD. In order of first appearance."""
    out = []
    for ch in dict.fromkeys(text):
        if ch != Tokenizer.UNKNOWN_TEXT and tokenizer.decode(tokenizer.encode(ch)) != ch:
            out.append(ch)
    return out


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. a checkpoint's metadata)."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("tokenizer state must be an object with a 'type'")
    loader = _LOADERS.get(data["type"])
    if loader is None:
        raise ValueError(f"unknown tokenizer type {data['type'][:40]!r}")
    return loader(data)
