"""Generating text: prompt in one forward pass, then one token per step from the KV cache.

`stream_generate` runs one prompt through N decoders at once: N `SamplingConfig`s become the N rows
of one batch, so every step is one forward pass for all of them. It yields a `GenerationStepEvent`
per step (per row: the token, its text, its probability, the top candidates) and a last
`GenerationDoneEvent`. `generate` is the one-decoder convenience that returns a `GenerationResult`.

Rules worth knowing:
- Random draws: rows with the same seed share them. Each distinct seed has its own
  `torch.Generator`, which gives one uniform per step; a row draws its token by inverse-CDF sampling
  over its tokens sorted from most to least probable (engine.sampling.sample_inverse_cdf). So two
  columns with the same seed differ only where their settings make them differ. Rows whose seed is
  None all share one fresh seed, reported in the done event so the run can be repeated.
- A tokenizer that adds a BOS token to every text (tokenizer.add_bos: Llama, Mistral) gets it at the start
  of the prompt, as transformers' `tokenizer(prompt)` gives it.
- Empty prompt: generation starts from that BOS, else from the tokenizer's end-of-text token if it has one
  (how GPT-2 separates documents), otherwise from the ids of a newline.
- A prompt longer than the context keeps its last context_length - 1 tokens (room for one new token).
- Sliding window: when the sequence fills the context, its last half is fed again as a fresh prompt
  (positions restart at 0, the learned position embeddings require it) and decoding goes on one token
  at a time. Each row stops at its own max_new_tokens, or earlier if a stop condition it asked for is
  met (stop_at_eot: an end-of-text or end-of-turn token, see `stop_token_ids`, kept as the last token;
  stop_strings: the text so far contains one, the token that completed it kept).
- Text pieces never end in half a UTF-8 character: bytes of an incomplete character wait in a buffer
  until the token that completes it (a byte-level BPE can split a character across tokens).
- Speed: decoding is memory-bound (every step reads all the weights). A small inference forward
  (`Decoder`) reads the model's weights directly, with no dropout, no autograd, and matmuls laid out
  for the CPU's BLAS (see `_Linear`): one row multiplies pre-transposed (in, out) copies of the
  wide matrices with `addmm`, several rows multiply the model's own (out, in) weights by the
  transposed activations.
- Compiled decoding (`compile=True`; by default on CUDA): the steps after the prompt run a decode step
  of fixed shape compiled with torch.compile, captured as a CUDA graph on a GPU
  (engine/generation/compiled.py). The prompt and the sliding window's refills stay eager. The first
  use for a (model shape, precision, batch size) compiles, announced by a `ProgressEvent` (job
  "compile") before and after; its time is left out of tokens_per_s and reported as compile_seconds.
"""
from __future__ import annotations

import codecs
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from engine.config import ModelConfig
from engine.events import Event, ProgressEvent
from engine.generation.compiled import CompiledStep, compiled_step_for, use_compiled
from engine.generation.forward import Decoder, decoder_for
from engine.generation.sampling import RowSettings, SamplingConfig, probs_from_logits, sample_inverse_cdf
from engine.model import GPT, KVCache

TOP_CANDIDATES = 20


# ---------------------------------------------------------------- events and results

class NotFiniteError(ValueError):
    """The model's logits are NaN or infinite (weights too large or broken): nothing can be sampled."""


@dataclass(frozen=True)
class TokenRecord:
    """One row's new token at one step, with what the app shows about it."""

    token_id: int
    piece: str  # the text this token adds (complete UTF-8 characters only)
    prob: float  # probability it was drawn with (after every filter; 1.0 for greedy)
    raw_prob: float  # the model's own probability (softmax of the raw logits)
    top_ids: tuple[int, ...]  # the TOP_CANDIDATES most probable tokens by the raw distribution
    top_raw: tuple[float, ...]  # their raw probabilities
    top_final: tuple[float, ...]  # their probabilities after the filters (0 = filtered out)
    done: bool  # this was the row's last token


@dataclass(frozen=True)
class GenerationStepEvent(Event):
    """One decoding step of every row; a row that finished at an earlier step has None."""

    step: int  # index of the new token, from 0
    rows: tuple[TokenRecord | None, ...]


@dataclass(frozen=True)
class GenerationDoneEvent(Event):
    prompt_ids: tuple[int, ...]  # the ids fed to the model (after the empty / too-long prompt rules)
    ids: tuple[tuple[int, ...], ...]  # new ids of each row
    texts: tuple[str, ...]  # text of each row's new ids
    stop_reasons: tuple[str, ...]  # "max_new_tokens", "eot" or "stop_string" per row
    seeds: tuple[int, ...]  # the seed each row drew with (repeat the run with these)
    new_tokens: int  # over all rows
    seconds: float  # wall time from the first forward pass to the last token
    tokens_per_s: float  # new_tokens / seconds
    compile_seconds: float = 0.0  # compiling the decode step first (not in seconds); 0 when eager or compiled before


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    ids: list[int]  # the new ids
    text: str  # the text of the new ids
    tokens_per_s: float
    seed: int
    stop_reason: str
    steps: list[TokenRecord] = field(default_factory=list)


# ---------------------------------------------------------------- prompts and text

def prompt_token_ids(tokenizer, prompt: str, config: ModelConfig) -> list[int]:
    """The ids fed to the model for a prompt (see the module docstring for the empty/long rules)."""
    ids = list(tokenizer.encode(prompt)) if prompt else []
    bos = getattr(tokenizer, "bos_id", None)
    if getattr(tokenizer, "add_bos", False) and bos is not None and ids[:1] != [bos]:
        # A tokenizer that starts every text with BOS (Llama, Mistral: transformers' tokenizer(text) does)
        # gets it here too; the model was trained on texts that begin with it.
        ids = [int(bos), *ids]
    if not ids:
        if tokenizer.eot_id is not None:
            ids = [int(tokenizer.eot_id)]
        else:
            ids = list(tokenizer.encode("\n")) or [0]
    ids = ids[-(config.context_length - 1):] if config.context_length > 1 else ids[-1:]
    bad = [i for i in ids if not 0 <= i < config.vocab_size]
    if bad:
        raise ValueError(f"the tokenizer gave id {bad[0]}, but the model knows only {config.vocab_size:,} tokens "
                         "(tokenizer and model don't belong together)")
    return ids


def window_keep(context_length: int) -> int:
    """Tokens fed again as a fresh prompt when the sequence fills the context (the sliding window)."""
    return max(1, context_length // 2)


def window_length(prompt_length: int, step: int, context_length: int) -> int:
    """How many of the latest tokens the forward saw when it chose the token of `step` (from 0): the
    prompt fills the cache, each step adds one token, and a full cache is refilled with window_keep."""
    keep = window_keep(context_length)
    length = prompt_length
    for _ in range(step):
        length = keep if length >= context_length else length + 1
    return length


def stop_token_ids(tokenizer) -> frozenset[int]:
    """The ids that end a text or a turn: the tokenizer's end-of-turn ids (a Hugging Face tokenizer's
    generation_config eos_token_id list) and its end-of-text id."""
    ids = {int(i) for i in getattr(tokenizer, "eos_ids", ()) or ()}
    if tokenizer.eot_id is not None:
        ids.add(int(tokenizer.eot_id))
    return frozenset(ids)


class _TextStream:
    """Token bytes in, complete UTF-8 text out; an incomplete character waits for its last bytes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def push(self, token_id: int) -> str:
        piece = self.decoder.decode(self.tokenizer.token_bytes(token_id))
        self.text += piece
        return piece

    def flush(self) -> str:
        """What is left in the buffer at the end (U+FFFD for an unfinished character)."""
        piece = self.decoder.decode(b"", final=True)
        self.text += piece
        return piece


# ---------------------------------------------------------------- generation

def _seeds(configs: Sequence[SamplingConfig]) -> list[int]:
    fresh = random.SystemRandom().randrange(2**63)  # one fresh seed shared by every seedless row
    return [c.seed if c.seed is not None else fresh for c in configs]


def stream_generate(model: GPT, tokenizer, prompt: str, configs: Sequence[SamplingConfig], *,
                    precision: str = "fp32", prompt_ids: Sequence[int] | None = None, compile: bool | None = None,
                    ) -> Iterator[GenerationStepEvent | GenerationDoneEvent | ProgressEvent]:
    """Generate from one prompt with N decoders at once; yields a GenerationStepEvent per step and a
    last GenerationDoneEvent. prompt_ids, when given, are used instead of encoding `prompt`.
    compile: run the compiled decode step (True; a ValueError says why where it cannot), the eager one
    (False), or the device's default (None: compiled on CUDA). A first compile yields two ProgressEvents.
    Closing the generator stops at once (no done event)."""
    configs = list(configs)
    if not configs:
        raise ValueError("give at least one sampling config")
    for c in configs:
        if not isinstance(c, SamplingConfig):
            raise ValueError(f"expected SamplingConfig, got {type(c).__name__}")
    if prompt_ids is None:
        ids = prompt_token_ids(tokenizer, prompt, model.config)
    else:
        ids = [int(i) for i in prompt_ids]
        if not ids or any(not 0 <= i < model.config.vocab_size for i in ids):
            raise ValueError("prompt_ids must be a non-empty list of the model's token ids")
        ids = ids[-(model.config.context_length - 1):]
    decoder = decoder_for(model, precision)
    step = compiled_step_for(decoder, len(configs)) if use_compiled(decoder, compile) else None
    return _run(decoder, tokenizer, ids, configs, step)


def _prefill(decoder: Decoder, prompt: torch.Tensor, n: int, cache: KVCache | None = None
             ) -> tuple[KVCache, torch.Tensor]:
    """The prompt (1, T) once, for one row; every one of the n rows then starts from a copy of its
    cache. Returns the cache (`cache` when given: an n-row cache to fill) and the (n, V) logits of the
    next token."""
    length = prompt.shape[1]
    if cache is not None and n == 1:
        cache.pos = 0
        return cache, decoder.forward(prompt, cache)
    cache1 = decoder.new_cache(1)
    logits = decoder.forward(prompt, cache1)
    if n == 1:
        return cache1, logits
    cache = cache if cache is not None else decoder.new_cache(n)
    cache.reserve(length)
    for layer in range(decoder.config.n_layers):
        cache.keys[layer][:, :, :length] = cache1.keys[layer][:, :, :length]
        cache.values[layer][:, :, :length] = cache1.values[layer][:, :, :length]
    cache.pos = length
    return cache, logits.expand(n, -1)


def _run(decoder: Decoder, tokenizer, prompt_ids: list[int], configs: list[SamplingConfig],
         compiled: CompiledStep | None = None) -> Iterator[GenerationStepEvent | GenerationDoneEvent | ProgressEvent]:
    n = len(configs)
    device = decoder.device
    context = decoder.config.context_length
    vocab = decoder.config.vocab_size
    limits = [c.max_new_tokens for c in configs]
    total_steps = max(limits)
    seeds = _seeds(configs)
    generators = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(seeds)}
    rows = RowSettings(configs, device)
    stop_ids = stop_token_ids(tokenizer)
    stop_at_eot = [c.stop_at_eot and bool(stop_ids) for c in configs]
    stop_strings = [c.stop_strings for c in configs]
    streams = [_TextStream(tokenizer) for _ in configs]
    new_ids: list[list[int]] = [[] for _ in configs]
    reasons = ["max_new_tokens"] * n
    active = [limit > 0 for limit in limits]
    # All tokens so far, for re-feeding the window when the context is full.
    history = torch.empty(n, len(prompt_ids) + total_steps, dtype=torch.long, device=device)
    history[:, :len(prompt_ids)] = torch.tensor(prompt_ids, device=device)
    length = len(prompt_ids)

    compile_seconds = 0.0
    if compiled is not None and not compiled.ready:
        yield ProgressEvent(job="compile", done=0, total=1, message=(
            f"Compiling the decode step for {n} row{'s' if n > 1 else ''} (once per model shape, precision and "
            "batch size; on a CPU this can take minutes)…"))
        compile_seconds = compiled.warm_up()
        yield ProgressEvent(job="compile", done=1, total=1, message=f"Decode step compiled in {compile_seconds:.1f} s")

    start = time.perf_counter()
    produced = 0
    cache = seen = logits = chosen = None
    for step in range(total_steps):
        # One inference-mode block per step (never held across a yield: it would leak to the caller).
        with torch.inference_mode():
            if step == 0:
                cache, logits = _prefill(decoder, history[:1, :length], n,
                                         None if compiled is None else compiled.cache)
                if rows.penalty is not None:
                    seen = torch.zeros(n, vocab, dtype=torch.bool, device=device)
                    seen[:, history[0, :length]] = True
            else:
                history[:, length] = chosen
                length += 1
                if seen is not None:
                    seen.scatter_(1, chosen.unsqueeze(1), True)
                if cache.pos >= context:
                    # Sliding window: feed the last half of the window again as a fresh prompt.
                    keep = window_keep(context)
                    cache.pos = 0
                    logits = decoder.forward(history[:, length - keep:length], cache)
                elif compiled is not None:
                    logits = compiled(chosen.unsqueeze(1), cache.pos)
                    cache.pos += 1
                else:
                    logits = decoder.forward(chosen.unsqueeze(1), cache)

            probs = probs_from_logits(logits, rows, seen)
            if rows.all_greedy:
                chosen = probs.argmax(dim=-1)
            else:
                draws = {s: torch.rand((), generator=g).item() for s, g in generators.items()}
                uniforms = torch.tensor([draws[s] for s in seeds], device=device)
                chosen = sample_inverse_cdf(probs, uniforms)
            raw = logits.softmax(dim=-1)
            top_raw, top_ids = raw.topk(min(TOP_CANDIDATES, vocab), dim=-1)
            column = chosen.unsqueeze(1)
            # One transfer to Python for the whole step's records.
            finite = torch.isfinite(logits).all(dim=-1, keepdim=True).to(probs.dtype)
            numbers = torch.cat([probs.gather(1, column), raw.gather(1, column), top_raw,
                                 probs.gather(1, top_ids), finite], dim=1).tolist()
            top_id_list = top_ids.tolist()
            chosen_list = chosen.tolist()
        if not all(row[-1] for row in numbers):
            # Weights so large (or broken) that the logits overflow: there is no distribution to draw from.
            raise NotFiniteError("the model's outputs are not finite numbers (its weights are too large or broken), "
                                 "so nothing can be sampled from it")

        records: list[TokenRecord | None] = []
        for r in range(n):
            if not active[r]:
                records.append(None)
                continue
            token = chosen_list[r]
            new_ids[r].append(token)
            produced += 1
            done = len(new_ids[r]) >= limits[r]
            if stop_at_eot[r] and token in stop_ids:
                done, reasons[r] = True, "eot"
            before = len(streams[r].text)
            piece = streams[r].push(token)
            if not done and stop_strings[r] and piece:
                tail = streams[r].text[max(0, before - max(map(len, stop_strings[r])) + 1):]
                if any(s in tail for s in stop_strings[r]):
                    done, reasons[r] = True, "stop_string"
            if done:
                piece += streams[r].flush()
                active[r] = False
            k = len(top_id_list[r])
            nums = numbers[r]
            records.append(TokenRecord(
                token_id=token, piece=piece, prob=nums[0], raw_prob=nums[1],
                top_ids=tuple(top_id_list[r]), top_raw=tuple(nums[2:2 + k]), top_final=tuple(nums[2 + k:2 + 2 * k]),
                done=done))
        yield GenerationStepEvent(step=step, rows=tuple(records))
        if not any(active):
            break

    seconds = time.perf_counter() - start
    yield GenerationDoneEvent(
        prompt_ids=tuple(prompt_ids), ids=tuple(tuple(x) for x in new_ids),
        texts=tuple(tokenizer.decode(x) for x in new_ids), stop_reasons=tuple(reasons), seeds=tuple(seeds),
        new_tokens=produced, seconds=seconds, tokens_per_s=produced / seconds if seconds > 0 and produced else 0.0,
        compile_seconds=compile_seconds)


def generate(model: GPT, tokenizer, prompt: str, config: SamplingConfig, precision: str = "fp32", *,
             prompt_ids: Sequence[int] | None = None, compile: bool | None = None) -> GenerationResult:
    """Generate one continuation; returns its ids, text, speed and per-step records."""
    steps: list[TokenRecord] = []
    done: GenerationDoneEvent | None = None
    for event in stream_generate(model, tokenizer, prompt, [config], precision=precision, prompt_ids=prompt_ids,
                                 compile=compile):
        if isinstance(event, GenerationStepEvent):
            steps.append(event.rows[0])
        elif isinstance(event, GenerationDoneEvent):
            done = event
    assert done is not None
    return GenerationResult(prompt_ids=list(done.prompt_ids), ids=list(done.ids[0]), text=done.texts[0],
                            tokens_per_s=done.tokens_per_s, seed=done.seeds[0], stop_reason=done.stop_reasons[0],
                            steps=steps)
