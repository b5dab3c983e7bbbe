"""A text cut into one tokenizer's tokens, mapped back onto the text's characters (no widgets here).

`tokenize_for_display` maps every token back onto the characters of the original text, so the
spans always re-join into exactly that text: byte-level tokens that split a UTF-8 character
(an emoji cut into two BPE tokens) are grouped into one span that lists all their ids. It runs in
the tab's jobs, off the GUI thread; spans.py shows the result.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from engine import CharTokenizer, Tokenizer, render_bytes


@dataclass
class Span:
    """Characters text[start:end] and the tokens that produced them (several when a token splits a character)."""

    start: int
    end: int
    tokens: list[int]  # indices into TokenizedText.ids


@dataclass
class TokenizedText:
    name: str
    text: str
    ids: list[int]
    spans: list[Span]
    token_bytes: list[bytes]
    exact: bool = True  # False where the tokenizer cannot give the text back (unknown characters)
    unknown: int = 0  # tokens that stand for characters the tokenizer does not know
    notes: list[str] = field(default_factory=list)
    _first_tokens: list[int] = field(default_factory=list, repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def num_chars(self) -> int:
        return len(self.text)

    @property
    def num_bytes(self) -> int:
        return len(self.text.encode("utf-8", errors="surrogatepass"))

    @property
    def chars_per_token(self) -> float:
        return self.num_chars / self.num_tokens if self.ids else 0.0

    def span_text(self, span: Span) -> str:
        return self.text[span.start:span.end]

    def span_of_token(self, token_index: int) -> int:
        """Index of the span that holds a token."""
        if len(self._first_tokens) != len(self.spans):
            self._first_tokens = [s.tokens[0] for s in self.spans]
        return max(0, bisect.bisect_right(self._first_tokens, token_index) - 1)

    def token_info(self, token_index: int) -> str:
        """What hovering a token tells: id, bytes in hex and the string."""
        tid = self.ids[token_index]
        data = self.token_bytes[token_index]
        hexed = " ".join(f"{b:02x}" for b in data)
        return f"id {tid} · bytes {hexed or '(none)'} · {render_bytes(data)!r}"


def _char_byte_starts(text: str) -> np.ndarray:
    """Byte offset (in UTF-8) where each character starts, and the text's length in bytes last."""
    code_points = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    sizes = 1 + (code_points >= 0x80).astype(np.int64) + (code_points >= 0x800) + (code_points >= 0x10000)
    return np.concatenate(([0], np.cumsum(sizes)))


def tokenize_for_display(tokenizer: Tokenizer, text: str, name: str | None = None) -> TokenizedText:
    """Encode `text` and map every token back onto the characters it came from."""
    ids = [int(i) for i in tokenizer.encode(text)]
    pieces = [tokenizer.token_bytes(i) for i in ids]
    result = TokenizedText(name or tokenizer.name, text, ids, [], pieces)
    if b"".join(pieces) == text.encode("utf-8", errors="surrogatepass"):
        # A span closes after each token that ends on a character boundary (vectorised: texts are long).
        char_starts = _char_byte_starts(text)
        token_ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
        chars = np.searchsorted(char_starts, token_ends)
        chars_c = np.minimum(chars, len(char_starts) - 1)
        closes = np.flatnonzero(char_starts[chars_c] == token_ends)
        first_token, first_char = 0, 0
        for k, end_char in zip(closes.tolist(), chars_c[closes].tolist()):
            result.spans.append(Span(first_char, end_char, list(range(first_token, k + 1))))
            first_token, first_char = k + 1, end_char
        return result
    if isinstance(tokenizer, CharTokenizer) and len(ids) == len(text):
        # One token per character; characters the vocabulary lacks became the unknown id 0.
        result.spans = [Span(i, i + 1, [i]) for i in range(len(text))]
        result.unknown = sum(1 for i in ids if i == 0)
        result.exact = result.unknown == 0
        if result.unknown:
            result.notes.append(f"{result.unknown} character(s) not in this vocabulary (shown in red, id 0)")
        return result
    # A tokenizer that changes the text (it should not happen): show what it gives back.
    result.exact = False
    result.spans, pos = [], 0
    for k, piece in enumerate(pieces):
        s = piece.decode("utf-8", errors="replace")
        result.spans.append(Span(pos, pos + len(s), [k]))
        pos += len(s)
    result.text = "".join(p.decode("utf-8", errors="replace") for p in pieces)
    result.notes.append("this tokenizer does not give the exact text back")
    return result
