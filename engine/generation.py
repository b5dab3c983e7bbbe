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
- Empty prompt: generation starts from the tokenizer's end-of-text token if it has one (how GPT-2
  separates documents), otherwise from the ids of a newline.
- A prompt longer than the context keeps its last context_length - 1 tokens (room for one new token).
- Sliding window: when the sequence fills the context, its last half is fed again as a fresh prompt
  (positions restart at 0, the learned position embeddings require it) and decoding goes on one token
  at a time. Each row stops at its own max_new_tokens, or earlier if a stop condition it asked for is
  met (stop_at_eot: the end-of-text token, kept as the last token; stop_strings: the text so far
  contains one, the token that completed it kept).
- Text pieces never end in half a UTF-8 character: bytes of an incomplete character wait in a buffer
  until the token that completes it (a byte-level BPE can split a character across tokens).
- Speed: decoding is memory-bound (every step reads all the weights). A small inference forward
  (`Decoder`) reads the model's weights directly, with no dropout, no autograd, and matmuls laid out
  for the CPU's BLAS (see `_Linear`): one row multiplies pre-transposed (in, out) copies of the
  wide matrices with `addmm`, several rows multiply the model's own (out, in) weights by the
  transposed activations.
"""
from __future__ import annotations

import codecs
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .events import Event
from .model import GPT, KVCache
from .precision import model_device, prepare_for_inference
from .sampling import RowSettings, SamplingConfig, apply_penalty, probs_from_logits, sample_inverse_cdf

TOP_CANDIDATES = 20
# Up to this many rows (decoders decoding together), matmuls use the decode layouts of _Linear;
# more rows (a prompt) use nn.Linear's.
_FEW_ROWS = 16


# ---------------------------------------------------------------- events and results

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

    kind = "gen_step"
    step: int  # index of the new token, from 0
    rows: tuple[TokenRecord | None, ...]


@dataclass(frozen=True)
class GenerationDoneEvent(Event):
    kind = "gen_done"
    prompt_ids: tuple[int, ...]  # the ids fed to the model (after the empty / too-long prompt rules)
    ids: tuple[tuple[int, ...], ...]  # new ids of each row
    texts: tuple[str, ...]  # text of each row's new ids
    stop_reasons: tuple[str, ...]  # "max_new_tokens", "eot" or "stop_string" per row
    seeds: tuple[int, ...]  # the seed each row drew with (repeat the run with these)
    new_tokens: int  # over all rows
    seconds: float  # wall time from the first forward pass to the last token
    tokens_per_s: float  # new_tokens / seconds


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    ids: list[int]  # the new ids
    text: str  # the text of the new ids
    tokens_per_s: float
    seed: int
    stop_reason: str
    steps: list[TokenRecord] = field(default_factory=list)


# ---------------------------------------------------------------- the lean inference forward

class _Linear:
    """y = x W^T + b for inference, with the matmul layout that streams the weights fastest.

    Decoding reads every weight once per step, so the layout BLAS sees decides the speed. Measured
    with MKL on a 2-core x86 CPU, weights cold in cache (GB/s of weights read, one thread):
    - one row, wide output (out > in: qkv, fc, the head): an (in, out) copy with addmm, 16-20 GB/s
      against 9-12 for nn.Linear's (out, in); narrow output (proj): (out, in) is faster as it is;
    - a few rows: (out, in) @ x^T, a tall-skinny product that reads W once (12-19 GB/s), where
      x @ W^T makes BLAS repack W on every call (4-7 GB/s); narrow outputs from 3 rows on keep
      nn.Linear's product;
    - many rows (a prompt) or another device: nn.Linear's F.linear.
    """

    __slots__ = ("weight", "bias", "bias_col", "weight_t", "module", "cpu", "wide")

    def __init__(self, module: nn.Module):
        self.module = None
        self.weight_t = None
        if type(module) is not nn.Linear:  # e.g. a dynamically quantized int8 Linear: call it
            self.module = module
            return
        self.weight = module.weight.detach()  # (out, in)
        self.bias = module.bias.detach() if module.bias is not None else None
        self.bias_col = self.bias.unsqueeze(1) if self.bias is not None else None
        self.cpu = self.weight.device.type == "cpu"
        self.wide = self.weight.shape[0] > self.weight.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x (M, in) -> (M, out)
        if self.module is not None:
            return self.module(x)
        rows = x.shape[0]
        if not self.cpu or rows > _FEW_ROWS or (not self.wide and rows != 2):
            return F.linear(x, self.weight, self.bias)
        if rows == 1:
            if self.weight_t is None:  # made on first use: only one-row decoding pays its memory
                self.weight_t = self.weight.t().contiguous()
            if self.bias is None:
                return torch.mm(x, self.weight_t)
            return torch.addmm(self.bias, x, self.weight_t)
        if self.bias is None:
            return torch.mm(self.weight, x.t()).t()
        return torch.addmm(self.bias_col, self.weight, x.t()).t()


class _Layer:
    __slots__ = ("ln1", "qkv", "out", "ln2", "fc", "proj")

    def __init__(self, block: nn.Module):
        self.ln1 = (block.ln1.weight.detach(), block.ln1.bias.detach(), block.ln1.eps)
        self.qkv = _Linear(block.attn.qkv)
        self.out = _Linear(block.attn.out_proj)
        self.ln2 = (block.ln2.weight.detach(), block.ln2.bias.detach(), block.ln2.eps)
        self.fc = _Linear(block.mlp.fc)
        self.proj = _Linear(block.mlp.proj)


class Decoder:
    """An inference-only forward pass over a GPT's weights (no dropout, no autograd), writing K/V
    into an engine.model.KVCache. Same maths as GPT.forward in eval mode; call it under
    torch.inference_mode()."""

    def __init__(self, model: GPT):
        self.config: ModelConfig = model.config
        # Only tensors are kept (never the module), so a model the app drops can be freed; quantized
        # (int8) embeddings are called as modules, plain tables indexed directly.
        plain = type(model.tok_emb) is nn.Embedding and type(model.pos_emb) is nn.Embedding
        self.tok_emb = model.tok_emb.weight.detach() if plain else None
        self.pos_emb = model.pos_emb.weight.detach() if plain else None
        self.embedding_modules = None if plain else (model.tok_emb, model.pos_emb)
        self.layers = [_Layer(b) for b in model.blocks]
        self.ln_f = (model.ln_f.weight.detach(), model.ln_f.bias.detach(), model.ln_f.eps)
        self.head = _Linear(model.head)
        self.dtype = self.ln_f[0].dtype
        self.device = self.ln_f[0].device

    def new_cache(self, batch: int) -> KVCache:
        return KVCache.empty(self.config, batch, self.device, self.dtype)

    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """ids (B, T) continuing at cache.pos -> float32 logits (B, V) of the last position.

        T > 1 must start an empty cache (a prompt); T == 1 is a decoding step.
        """
        B, T = ids.shape
        C, H = self.config.emb_dim, self.config.n_heads
        D = C // H
        start = cache.pos
        if start + T > self.config.context_length:
            raise ValueError(f"{start + T} tokens do not fit the context of {self.config.context_length}")
        if T > 1 and start != 0:
            raise ValueError("a multi-token forward must start an empty cache")
        if self.tok_emb is not None:
            x = (self.tok_emb[ids] + self.pos_emb[start:start + T]).view(B * T, C)
        else:
            positions = torch.arange(start, start + T, device=self.device)
            tok_emb, pos_emb = self.embedding_modules
            x = (tok_emb(ids) + pos_emb(positions)).view(B * T, C)
        for i, layer in enumerate(self.layers):
            h = F.layer_norm(x, (C,), *layer.ln1)
            qkv = layer.qkv(h)  # (B*T, 3C)
            if T == 1:
                q, k, v = qkv.reshape(B, 3, H, 1, D).unbind(1)  # each (B, H, 1, D)
            else:
                q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
            keys, values = cache.keys[i], cache.values[i]
            keys[:, :, start:start + T] = k
            values[:, :, start:start + T] = v
            if T == 1:
                # One query sees every cached position: no mask.
                y = F.scaled_dot_product_attention(q, keys[:, :, :start + 1], values[:, :, :start + 1])
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(B * T, C)
            x = x + layer.out(y)
            h = F.layer_norm(x, (C,), *layer.ln2)
            x = x + layer.proj(F.gelu(layer.fc(h), approximate="tanh"))
        cache.pos = start + T
        last = x.view(B, T, C)[:, -1]
        return self.head(F.layer_norm(last, (C,), *self.ln_f)).float()


class _DecoderCache:
    """One Decoder per (model, precision), rebuilt when the model's weights change.

    Weights change in place during training (each optimizer step bumps a tensor's version counter)
    or get replaced (loading); both are caught by comparing versions and data pointers. Only the
    latest few are kept, so memory for copies (bf16, int8, transposed matrices) stays bounded.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self.entries: list[tuple[weakref.ref, str, tuple, Decoder]] = []

    @staticmethod
    def _stamp(model: nn.Module) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())

    def get(self, model: GPT, precision: str) -> Decoder:
        stamp = self._stamp(model)
        self.entries = [e for e in self.entries if e[0]() is not None]
        for entry in self.entries:
            ref, prec, entry_stamp, decoder = entry
            if ref() is model and prec == precision and entry_stamp == stamp:
                self.entries.remove(entry)
                self.entries.append(entry)
                return decoder
        self.entries = [e for e in self.entries if not (e[0]() is model and e[1] == precision)]
        decoder = Decoder(prepare_for_inference(model, precision))
        self.entries.append((weakref.ref(model), precision, stamp, decoder))
        del self.entries[:-self.size]
        return decoder


_decoders = _DecoderCache()


def decoder_for(model: GPT, precision: str = "fp32") -> Decoder:
    """The (cached) inference forward of a model in a precision."""
    return _decoders.get(model, precision)


# ---------------------------------------------------------------- prompts and text

def prompt_token_ids(tokenizer, prompt: str, config: ModelConfig) -> list[int]:
    """The ids fed to the model for a prompt (see the module docstring for the empty/long rules)."""
    ids = list(tokenizer.encode(prompt)) if prompt else []
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
                    precision: str = "fp32", prompt_ids: Sequence[int] | None = None,
                    ) -> Iterator[GenerationStepEvent | GenerationDoneEvent]:
    """Generate from one prompt with N decoders at once; yields a GenerationStepEvent per step and a
    last GenerationDoneEvent. prompt_ids, when given, are used instead of encoding `prompt`.
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
    return _run(decoder, tokenizer, ids, configs)


def _prefill(decoder: Decoder, prompt: torch.Tensor, n: int) -> tuple[KVCache, torch.Tensor]:
    """The prompt (1, T) once, for one row; every one of the n rows then starts from a copy of its
    cache. Returns the cache and the (n, V) logits of the next token."""
    length = prompt.shape[1]
    cache1 = decoder.new_cache(1)
    logits = decoder.forward(prompt, cache1)
    if n == 1:
        return cache1, logits
    cache = decoder.new_cache(n)
    for layer in range(decoder.config.n_layers):
        cache.keys[layer][:, :, :length] = cache1.keys[layer][:, :, :length]
        cache.values[layer][:, :, :length] = cache1.values[layer][:, :, :length]
    cache.pos = length
    return cache, logits.expand(n, -1)


def _run(decoder: Decoder, tokenizer, prompt_ids: list[int], configs: list[SamplingConfig]
         ) -> Iterator[GenerationStepEvent | GenerationDoneEvent]:
    n = len(configs)
    device = decoder.device
    context = decoder.config.context_length
    vocab = decoder.config.vocab_size
    limits = [c.max_new_tokens for c in configs]
    total_steps = max(limits)
    seeds = _seeds(configs)
    generators = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(seeds)}
    rows = RowSettings(configs, device)
    eot = tokenizer.eot_id
    stop_at_eot = [c.stop_at_eot and eot is not None for c in configs]
    stop_strings = [c.stop_strings for c in configs]
    streams = [_TextStream(tokenizer) for _ in configs]
    new_ids: list[list[int]] = [[] for _ in configs]
    reasons = ["max_new_tokens"] * n
    active = [limit > 0 for limit in limits]
    # All tokens so far, for re-feeding the window when the context is full.
    history = torch.empty(n, len(prompt_ids) + total_steps, dtype=torch.long, device=device)
    history[:, :len(prompt_ids)] = torch.tensor(prompt_ids, device=device)
    length = len(prompt_ids)

    start = time.perf_counter()
    produced = 0
    cache = seen = logits = chosen = None
    for step in range(total_steps):
        # One inference-mode block per step (never held across a yield: it would leak to the caller).
        with torch.inference_mode():
            if step == 0:
                cache, logits = _prefill(decoder, history[:1, :length], n)
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
                    keep = max(1, context // 2)
                    cache.pos = 0
                    logits = decoder.forward(history[:, length - keep:length], cache)
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
            numbers = torch.cat([probs.gather(1, column), raw.gather(1, column), top_raw,
                                 probs.gather(1, top_ids)], dim=1).tolist()
            top_id_list = top_ids.tolist()
            chosen_list = chosen.tolist()

        records: list[TokenRecord | None] = []
        for r in range(n):
            if not active[r]:
                records.append(None)
                continue
            token = chosen_list[r]
            new_ids[r].append(token)
            produced += 1
            done = len(new_ids[r]) >= limits[r]
            if stop_at_eot[r] and token == eot:
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
        new_tokens=produced, seconds=seconds, tokens_per_s=produced / seconds if seconds > 0 and produced else 0.0)


def generate(model: GPT, tokenizer, prompt: str, config: SamplingConfig, precision: str = "fp32", *,
             prompt_ids: Sequence[int] | None = None) -> GenerationResult:
    """Generate one continuation; returns its ids, text, speed and per-step records."""
    steps: list[TokenRecord] = []
    done: GenerationDoneEvent | None = None
    for event in stream_generate(model, tokenizer, prompt, [config], precision=precision, prompt_ids=prompt_ids):
        if isinstance(event, GenerationStepEvent):
            steps.append(event.rows[0])
        else:
            done = event
    assert done is not None
    return GenerationResult(prompt_ids=list(done.prompt_ids), ids=list(done.ids[0]), text=done.texts[0],
                            tokens_per_s=done.tokens_per_s, seed=done.seeds[0], stop_reason=done.stop_reasons[0],
                            steps=steps)
