"""What the Tokenizer tab computes off the GUI thread: the text tokenized for every encoding, the named
encodings (cache or network), the corpus's character vocabulary, a BPE trained on a corpus, and the
bytes per token of every encoding."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.tabs.tokenizer.tokenized import TokenizedText, tokenize_for_display
from engine import (
    CharTokenizer,
    Corpus,
    Event,
    ProgressEvent,
    Tokenizer,
    load_corpus_job,
    named_encoding_status,
    train_bpe_job,
)

CHART_SAMPLE_CHARS = 200_000  # bytes-per-token is measured on this much of the corpus
BPE_TEXT_CAP = 20_000_000  # characters of a corpus a BPE is trained on at most


@dataclass(frozen=True)
class NamedEncodingsLoaded(Event):
    status: tuple  # (name, Tokenizer | None, reason | None), ...


@dataclass(frozen=True)
class BytesPerToken(Event):
    values: tuple  # (name, bytes per token), ...
    source: str


def named_encodings_job() -> Iterator[Event]:
    """Load the named tiktoken encodings (cache or network) off the GUI thread."""
    yield NamedEncodingsLoaded(tuple(named_encoding_status()))


def bytes_per_token_job(text: str, encodings: list[tuple[str, Tokenizer]], source: str) -> Iterator[Event]:
    values = []
    size = len(text.encode("utf-8", errors="surrogatepass"))
    for name, tokenizer in encodings:
        n = len(tokenizer.encode(text))
        values.append((name, size / n if n else 0.0))
        yield ProgressEvent("bytes_per_token", len(values), len(encodings), name)
    yield BytesPerToken(tuple(values), source)


def bpe_job(corpus: Corpus | str, vocab_size: int, pattern: str, name: str) -> Iterator[Event]:
    """Load the corpus (a built-in may take a moment, a download reports its bytes) and train a BPE on it;
    stopping = closing this."""
    yield ProgressEvent("bpe", 0, 1, "reading the corpus…")
    if isinstance(corpus, str):
        corpus = yield from load_corpus_job(corpus)
    documents, total = [], 0
    for doc in corpus.documents:  # documents stay apart: no merge is learned across two of them
        documents.append(doc[: BPE_TEXT_CAP - total])
        total += len(documents[-1])
        if total >= BPE_TEXT_CAP:
            break
    yield from train_bpe_job(documents, vocab_size, pattern=pattern, name=name)


def sample_text(text: str, size: int = CHART_SAMPLE_CHARS) -> str:
    """Up to `size` characters taken from five places, so one unusual start doesn't decide the chart."""
    if len(text) <= size:
        return text
    part = size // 5
    step = (len(text) - part) // 4
    return "".join(text[i * step: i * step + part] for i in range(5))


@dataclass(frozen=True)
class Tokenized(Event):
    """One encoding of the text, ready to show (or why it could not be made)."""

    key: str
    data: TokenizedText | None
    error: str = ""


def tokenize_job(text: str, rows: list[tuple[str, str, Tokenizer]]) -> Iterator[Event]:
    """Tokenize `text` with each (key, name, tokenizer) and map the tokens back onto it."""
    for key, name, tokenizer in rows:
        try:
            data = tokenize_for_display(tokenizer, text, name)
        except Exception as e:  # a broken tokenizer file must not take the tab down
            yield Tokenized(key, None, f"could not encode: {e}")
            continue
        yield Tokenized(key, data)


@dataclass(frozen=True)
class CharVocabulary(Event):
    corpus: Corpus
    tokenizer: CharTokenizer


def char_vocabulary_job(corpus: Corpus) -> Iterator[Event]:
    """The corpus's characters as a char tokenizer (a set over millions of characters: not on the GUI thread)."""
    yield CharVocabulary(corpus, CharTokenizer.from_text(corpus.text()))
