"""Byte-level BPE training: learn merges from a corpus, get a tiktoken Encoding that encodes at tiktoken's speed.

How: Hugging Face `tokenizers`' BPE trainer (Rust, multi-threaded) learns the merges over the corpus
pre-split with GPT-2's or GPT-4's (cl100k) pattern; its merges are turned back from the ByteLevel
stand-in characters ("Ġ" = space) into raw bytes and become tiktoken's mergeable ranks: the 256 single
bytes get ranks 0..255 and the k-th new token rank 256 + k, so tiktoken applies the merges in the
order they were learned. The end-of-text token takes the last id, so `bpe:N` gives exactly N ids
(fewer only when the text runs out of pairs to merge).

Progress and cancel: the trainer runs in a helper thread (it releases the GIL) while `train_bpe_job`
yields ProgressEvents. Counting words reports characters done / total; learning the merges happens
inside the Rust trainer, which reports nothing, so those events have total 0 (indeterminate).
Closing the generator cancels: during counting the trainer stops at once; during the merges (well
under a second for 5 MB and 4096 tokens) the thread finishes in the background and its result is dropped.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.events import Event, ProgressEvent
from engine.tokenizers.base import Tokenizer
from engine.tokenizers.bpe import ENDOFTEXT, PATTERNS, TiktokenTokenizer, gpt2_byte_decoder
from engine.tokenizers.files import load_tokenizer_file, save_tokenizer

__all__ = ["BPETrainedEvent", "train_bpe_job", "train_bpe", "merges_table", "save_tokenizer",
           "load_tokenizer_file", "MIN_VOCAB_SIZE", "MAX_VOCAB_SIZE"]

MIN_VOCAB_SIZE = 257  # the 256 bytes and the end-of-text token
MAX_VOCAB_SIZE = 262_144
CHUNK_CHARS = 64 * 1024
POLL_S = 0.1
# A chunk may end only at a newline between two non-space characters: there both patterns cut a piece
# on each side of the newline, so chunking changes no piece and so no count.
_SAFE_SPLIT = re.compile(r"\S\n(?=\S)")


@dataclass(frozen=True)
class BPETrainedEvent(Event):
    """The last event of `train_bpe_job`: the trained tokenizer and how long it took."""

    json_name = "bpe_trained"
    tokenizer: Tokenizer
    seconds: float

    def to_json(self) -> dict[str, Any]:
        t = self.tokenizer
        return {"event": self.json_name, "tokenizer": t.name, "vocab_size": t.vocab_size, "seconds": self.seconds}


def _chunks(documents: Sequence[str]) -> Iterator[str]:
    """Pieces of about CHUNK_CHARS, cut only where pre-tokenization would cut anyway."""
    for doc in documents:
        start = 0
        while len(doc) - start > CHUNK_CHARS:
            m = _SAFE_SPLIT.search(doc, start + CHUNK_CHARS)
            if m is None:
                break
            end = m.start() + 2  # keep the newline with the left chunk
            yield doc[start:end]
            start = end
        if start < len(doc):
            yield doc[start:]


def _valid_unicode(text: str) -> str:
    """Lone surrogates can't cross into Rust: make them U+FFFD (pairs become their character), as tiktoken."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _hf_tokenizer(pattern: str):
    from tokenizers import Regex, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer(models.BPE())
    if pattern == "gpt2":
        # ByteLevel's built-in split is GPT-2's pattern.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        # Oniguruma (Ruby syntax) reads `{1,3}+` as "one or more groups of 1-3", not as possessive:
        # plain `{1,3}` is what tiktoken's `{1,3}+` means here (nothing follows it in its alternative).
        onig_pattern = PATTERNS[pattern].replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(onig_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    return tok


def _hf_trainer(vocab_size: int):
    from tokenizers import pre_tokenizers, trainers

    # vocab_size - 1: the 256 bytes and the merges; the end-of-text token is added after.
    return trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False, special_tokens=[],
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def ranks_from_hf_merges(merges: list) -> dict[bytes, int]:
    """tiktoken ranks from a Hugging Face ByteLevel BPE's merges, in the order they were learned."""
    decoder = gpt2_byte_decoder()
    ranks = {bytes([b]): b for b in range(256)}
    for merge in merges:
        left, right = merge if isinstance(merge, (list, tuple)) else merge.split(" ")
        token = bytes(decoder[c] for c in left) + bytes(decoder[c] for c in right)
        ranks.setdefault(token, len(ranks))  # a token made twice keeps its first (highest-priority) rank
    return ranks


class _Cancelled(Exception):
    pass


def train_bpe_job(text: str | Sequence[str], vocab_size: int, pattern: str = "gpt2",
                  name: str | None = None) -> Iterator[ProgressEvent | BPETrainedEvent]:
    """Train a byte-level BPE of `vocab_size` ids on text (or a list of documents).

    Yields ProgressEvent(job="bpe") while it works and BPETrainedEvent(tokenizer, seconds) last.
    Close the generator to cancel.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab size must be a whole number, got {vocab_size!r}")
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"vocab size must be between {MIN_VOCAB_SIZE} (the 256 bytes and end-of-text) "
                         f"and {MAX_VOCAB_SIZE:,}, got {vocab_size:,}")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pre-tokenization pattern {pattern!r}; choose {' or '.join(PATTERNS)}")
    documents = [text] if isinstance(text, str) else list(text)
    total = sum(len(d) for d in documents)
    started = time.perf_counter()
    state = {"chars": 0, "cancel": False, "error": None, "merges": None}

    def feed() -> Iterator[str]:
        for chunk in _chunks(documents):
            if state["cancel"]:
                raise _Cancelled()  # makes the Rust trainer return with an error: nothing learned
            state["chars"] += len(chunk)
            yield _valid_unicode(chunk)

    def work() -> None:
        try:
            tok = _hf_tokenizer(pattern)
            tok.train_from_iterator(feed(), _hf_trainer(vocab_size))
            if not state["cancel"]:
                state["merges"] = json.loads(tok.to_str())["model"]["merges"]
        except BaseException as e:  # handed to the generator's thread
            state["error"] = e

    thread = threading.Thread(target=work, name="bpe-train", daemon=True)
    thread.start()
    try:
        yield ProgressEvent("bpe", 0.0, float(total), "counting words")
        while thread.is_alive():
            thread.join(POLL_S)
            if state["chars"] < total:
                yield ProgressEvent("bpe", float(state["chars"]), float(total), "counting words")
            else:
                yield ProgressEvent("bpe", 0.0, 0.0, f"learning {vocab_size - MIN_VOCAB_SIZE:,} merges")
    finally:
        state["cancel"] = True  # on close: stop feeding the trainer (no effect once it finished)
    if state["error"] is not None:
        raise ValueError(f"BPE training failed: {state['error']}")
    ranks = ranks_from_hf_merges(state["merges"])
    tokenizer = TiktokenTokenizer.from_ranks(name or f"bpe-{vocab_size}-{pattern}", ranks, PATTERNS[pattern],
                                             {ENDOFTEXT: len(ranks)})
    yield BPETrainedEvent(tokenizer, time.perf_counter() - started)


def train_bpe(text: str | Sequence[str], vocab_size: int, pattern: str = "gpt2",
              name: str | None = None) -> TiktokenTokenizer:
    """Run `train_bpe_job` to the end and return the tokenizer."""
    for event in train_bpe_job(text, vocab_size, pattern, name):
        if isinstance(event, BPETrainedEvent):
            return event.tokenizer
    raise RuntimeError("BPE training ended without a result")


def merges_table(tokenizer: Tokenizer) -> list[tuple[int, bytes, bytes, bytes]]:
    """(rank, left, right, merged) for every merge of a BPE tokenizer, in the order they apply.

    Recovered from the ranks (the pair whose merge made each token), so it works for trained,
    imported and named encodings alike; empty for a char tokenizer.
    """
    if isinstance(tokenizer, TiktokenTokenizer):
        return tokenizer.merges()
    return []
