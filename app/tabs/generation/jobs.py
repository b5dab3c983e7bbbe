"""The Generation tab's engine jobs and the small pure helpers around them (no widgets here).

`generation_job` runs every column as one batched engine job and groups its events into
`TokenChunk`s, each event stamped with the worker's clock so the tab can tell each column's time to
first token and speed; `logits_job` recomputes one step's logits for the distribution view.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from app.tabs.generation.presets import SamplingSettings
from engine import Event, GenerationStepEvent, SamplingConfig, decoder_for, stream_generate

CHUNK_SECONDS = 0.08  # token events are grouped this long before they cross to the GUI thread


@dataclass(frozen=True)
class TokenChunk(Event):
    """Generation events grouped in the worker thread, so a fast model cannot flood the GUI."""

    events: tuple[Any, ...]
    times: tuple[float, ...] = ()  # time.perf_counter() in the worker when each event came out of the engine


@dataclass(frozen=True)
class JobStarted(Event):
    """First event of a generation job: the worker's clock when the job began (before the model is prepared)."""

    time: float


def chunked(events: Iterable[Any], seconds: float = CHUNK_SECONDS) -> Iterator[TokenChunk]:
    """Group an engine event stream into TokenChunks of about `seconds` each; the last event flushes.

    Closing this generator (Stop) closes the engine's generator too.
    """
    with contextlib.closing(iter(events)) as iterator:
        batch: list[Any] = []
        times: list[float] = []
        last = time.monotonic()
        for event in iterator:
            batch.append(event)
            times.append(time.perf_counter())
            now = time.monotonic()
            if now - last >= seconds or not isinstance(event, GenerationStepEvent):
                yield TokenChunk(tuple(batch), tuple(times))
                batch, times, last = [], [], now
        if batch:
            yield TokenChunk(tuple(batch), tuple(times))


def sampling_config(settings: SamplingSettings, max_new_tokens: int, seed: int, stop_at_eot: bool = False,
                    stop_strings: tuple[str, ...] = ()) -> SamplingConfig:
    """The engine's config for one column (temperature 0 reads as greedy, as on every playground)."""
    return SamplingConfig(greedy=settings.greedy, temperature=settings.temperature, top_k=settings.top_k,
                          top_p=settings.top_p, min_p=settings.min_p,
                          repetition_penalty=settings.repetition_penalty, max_new_tokens=max_new_tokens,
                          seed=seed, stop_at_eot=stop_at_eot, stop_strings=stop_strings)


def generation_job(model, tokenizer, prompt: str, configs: list[SamplingConfig], precision: str,
                   prompt_ids: list[int]) -> Iterator[JobStarted | TokenChunk]:
    """The job handed to the JobRunner. stream_generate is called here, in the worker thread, because
    preparing a bf16 / int8 copy of a big model takes a while and must not freeze the window."""
    yield JobStarted(time.perf_counter())
    yield from chunked(stream_generate(model, tokenizer, prompt, configs, precision=precision,
                                       prompt_ids=prompt_ids))


def parse_stop_strings(text: str) -> tuple[str, ...]:
    """The stop-strings field: strings separated by commas, spaces around them ignored; \\n, \\t, \\s, \\,
    and \\\\ stand for a newline, a tab, a space, a comma and a backslash. Empty pieces are dropped."""
    out, current, i = [], [], 0
    escapes = {"n": "\n", "t": "\t", "s": "\x00", ",": ",", "\\": "\\"}  # \s: a placeholder the strip below keeps
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in escapes:
            current.append(escapes[text[i + 1]])
            i += 2
            continue
        if ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    out.append("".join(current))
    return tuple(s for s in (piece.strip(" ").replace("\x00", " ") for piece in out) if s)


def step_logits(model, precision: str, window_ids: list[int]) -> torch.Tensor:
    """The logits (V,) the engine computes after these tokens: its own inference forward and precision."""
    decoder = decoder_for(model, precision)
    ids = torch.tensor([window_ids], dtype=torch.long, device=decoder.device)
    with torch.inference_mode():
        return decoder.forward(ids, decoder.new_cache(1))[0].float().cpu()


@dataclass(frozen=True)
class LogitsReady(Event):
    key: tuple[int, int, int]  # (id of the model, column, step)
    logits: torch.Tensor


def logits_job(model, precision: str, key: tuple[int, int, int], window_ids: list[int]) -> Iterator[LogitsReady]:
    """One step's logits, off the GUI thread (a forward pass of a big model takes seconds)."""
    yield LogitsReady(key, step_logits(model, precision, window_ids))


@dataclass
class ColumnTiming:
    """When one column's tokens arrived (the worker's clock): time to first token and decoding speed."""

    started: float  # the job began (the model was still to be prepared)
    first: float | None = None
    last: float | None = None
    tokens: int = 0

    def add(self, at: float) -> None:
        if self.first is None:
            self.first = at
        self.last = at
        self.tokens += 1

    @property
    def first_token_s(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens after the first one per second (the prompt's prefill counts in the first token's time)."""
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)

    def describe(self) -> str:
        parts = []
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.1f} tokens/s")
        return " · ".join(parts)


@dataclass
class GenerationRun:
    """What one Generate produced, kept for the distribution view."""

    prompt: str
    prompt_ids: list[int]  # what the model was fed (after the engine's empty / too-long prompt rules)
    precision: str
    ids: list[list[int]] = field(default_factory=list)  # per column: generated ids
    records: list[list[Any]] = field(default_factory=list)  # per column: the engine's per-step row records
    timings: list[ColumnTiming] = field(default_factory=list)  # per column, on the worker's clock
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    done: Any = None  # the engine's GenerationDoneEvent, once it came
    chat: bool = False  # a chat turn: `prompt` is the user's message (see chat.py)

    def take_step(self, event: GenerationStepEvent, at: float) -> list[tuple[int, tuple[int, str, float]]]:
        """Record one engine step (`at`: the worker's clock); returns (column, (step, piece, probability)) for
        each column that got a token."""
        tokens = []
        for row, record in enumerate(event.rows):
            if row >= len(self.ids) or record is None:  # None: this row finished earlier
                continue
            self.ids[row].append(int(record.token_id))
            self.records[row].append(record)
            self.tokens += 1
            if row < len(self.timings):
                self.timings[row].add(at)
            tokens.append((row, (len(self.ids[row]) - 1, record.piece, float(record.prob))))
        return tokens
