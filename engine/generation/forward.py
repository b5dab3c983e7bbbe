"""The inference forward: one pass over a model's weights with a KV cache, no dropout, no autograd.

Every inference path of the engine runs through `Decoder.forward`: generation (prompt, then one token per
step), the training run's samples, attention maps, and the options of engine/generation/capture.py
(logits of every position, the residual stream after each block, attention weights, head / attention /
MLP ablation, a differentiable run from token embeddings). Without options it is the lean decoding loop;
with them, the same loop calls a `CaptureRun` at four points of each block.

Decoding is memory-bound (every step reads all the weights), so matmuls are laid out for the CPU's BLAS
(see `_Linear`): one row multiplies pre-transposed (in, out) copies of the wide matrices with `addmm`,
several rows multiply the model's own (out, in) weights by the transposed activations.

Model families: the loop asks each layer for its pieces (`norm1`, `qkv`, `out`, `norm2`, `mlp`), so a
family is a layer class with those five, plus the decoder's embeddings and final norm (a family without
learned positions has `pos_emb` None). `_GPT2Layer` is the GPT-2 family's; `_LlamaLayer` the llama family's
(RMSNorm, rotary positions applied in `qkv`, SwiGLU), with grouped-query attention: its keys and values have
n_kv_heads heads, and the loop lets each serve its group of query heads (`_attend`). Captured attention
weights are per query head, (B, n_heads, T, S), as transformers returns them.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.generation.capture import AblationMeans, CaptureRun, ForwardOptions, ForwardOutput
from engine.generation.precision import prepare_for_inference
from engine.model import GPT, KVCache, repeat_kv, rms_norm
from engine.rope import RotaryTables, rotate

# Up to this many rows (decoders decoding together), matmuls use the decode layouts of _Linear;
# more rows (a prompt) use nn.Linear's.
_FEW_ROWS = 16


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
                with torch.inference_mode(False):  # a plain tensor, usable later under autograd too
                    self.weight_t = self.weight.t().contiguous()
            if self.bias is None:
                return torch.mm(x, self.weight_t)
            return torch.addmm(self.bias, x, self.weight_t)
        if self.bias is None:
            return torch.mm(self.weight, x.t()).t()
        return torch.addmm(self.bias_col, self.weight, x.t()).t()


class _Fused:
    """Linears that read the same input (q/k/v; gate/up) as one: for one-row decoding their (in, out) copies sit
    side by side, one wide addmm instead of several narrow products (the copies _Linear would make of the wide
    ones anyway); other row counts, other devices and int8 run each on its own and join the outputs."""

    __slots__ = ("parts", "weight_t", "bias", "fusable")

    def __init__(self, modules: list[nn.Module]):
        self.parts = [_Linear(m) for m in modules]
        self.weight_t = self.bias = None
        self.fusable = all(p.module is None and p.cpu for p in self.parts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x (M, in) -> (M, sum of outs)
        if x.shape[0] != 1 or not self.fusable:
            return torch.cat([p(x) for p in self.parts], dim=1)
        if self.weight_t is None:  # made on first use, as _Linear's
            with torch.inference_mode(False):
                if any(p.bias is not None for p in self.parts):
                    self.bias = torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0])
                                           for p in self.parts])
                self.weight_t = torch.cat([p.weight.t() for p in self.parts], dim=1)  # (in, sum of outs)
        if self.bias is None:
            return torch.mm(x, self.weight_t)
        return torch.addmm(self.bias, x, self.weight_t)


class _LayerNorm:
    """LayerNorm with learned scale and shift (the GPT-2 family's norm)."""

    __slots__ = ("weight", "bias", "eps", "shape")

    def __init__(self, module: nn.Module):
        self.weight, self.bias, self.eps = module.weight.detach(), module.bias.detach(), module.eps
        self.shape = tuple(module.normalized_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class _GPT2Layer:
    """One GPT-2 block for inference: pre-LayerNorm attention (one qkv matmul, learned positions added
    before the first block) and a GELU MLP.

    What the loop in Decoder.forward asks of a layer of any family:
    - norm1(x), norm2(x): (M, C) -> (M, C);
    - qkv(h, B, T, start) -> q (B, n_heads, T, D), k and v (B, n_kv_heads, T, D), with the positions
      start .. start + T - 1 applied (a rotary family rotates q and k here); in the fixed-shape step
      (Decoder.step, compiled) T is 1 and start a 1-element long tensor, so no Python int is read from it;
    - out: the output projection, (M, n_heads * D) -> (M, C);
    - mlp(h): (M, C) -> (M, C).
    """

    __slots__ = ("norm1", "qkv_proj", "out", "norm2", "fc", "proj", "n_heads", "head_dim")

    def __init__(self, block: nn.Module, config: ModelConfig):
        self.norm1 = _LayerNorm(block.ln1)
        self.qkv_proj = _Linear(block.attn.qkv)
        self.out = _Linear(block.attn.out_proj)
        self.norm2 = _LayerNorm(block.ln2)
        self.fc = _Linear(block.mlp.fc)
        self.proj = _Linear(block.mlp.proj)
        self.n_heads, self.head_dim = config.n_heads, config.head_dim

    def qkv(self, h: torch.Tensor, B: int, T: int, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = self.qkv_proj(h)  # (B*T, 3C)
        if T == 1:
            return qkv.reshape(B, 3, self.n_heads, 1, self.head_dim).unbind(1)  # each (B, H, 1, D)
        return qkv.view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        # tanh-approximated GELU, as GPT-2.
        return self.proj(F.gelu(self.fc(h), approximate="tanh"))


class _RMSNorm:
    """RMSNorm with a learned scale (the llama family's norm), normalised in float32 as the model's."""

    __slots__ = ("weight", "eps")

    def __init__(self, module: nn.Module):
        self.weight, self.eps = module.weight.detach(), module.eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class _Rotary:
    """The rotary tables (cos, sin) of the positions a forward pass is at: made by the first layer that asks,
    reused by the others (every layer turns the same positions). The fixed-shape step (a position given as a
    tensor) reads rows of tables made once for the whole context (`full`)."""

    def __init__(self, config: ModelConfig, device: torch.device):
        self.tables = RotaryTables(config, device)
        self.context = config.context_length
        self.last: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.full: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, start: int | torch.Tensor, T: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(start, torch.Tensor):  # the compiled step: never dynamic scaling (see compile_problem)
            if dtype not in self.full:
                with torch.inference_mode(False):
                    self.full[dtype] = self.tables(0, self.context, dtype)
            cos, sin = self.full[dtype]
            return cos[start], sin[start]  # (1, D)
        key = (start, T, dtype, torch.is_inference_mode_enabled())
        last = self.last  # one read: decoders may be shared between threads
        if last is None or last[0] != key:
            last = (key, self.tables(start, T, dtype))
            self.last = last
        return last[1]


class _LlamaLayer:
    """One llama-family block for inference: pre-RMSNorm grouped-query attention with rotary positions
    (optional q/k/v biases) and a SwiGLU MLP. The layer pieces are those of _GPT2Layer; q/k/v and gate/up
    each run as one matmul (_Fused), and queries and keys are turned together."""

    __slots__ = ("norm1", "qkv_proj", "out", "norm2", "gate_up", "down", "rotary", "n_heads", "n_kv_heads",
                 "head_dim", "hidden")

    def __init__(self, block: nn.Module, config: ModelConfig, rotary: _Rotary):
        attn, mlp = block.attn, block.mlp
        self.norm1, self.norm2 = _RMSNorm(block.ln1), _RMSNorm(block.ln2)
        self.qkv_proj = _Fused([attn.q_proj, attn.k_proj, attn.v_proj])
        self.out = _Linear(attn.out_proj)
        self.gate_up = _Fused([mlp.gate_proj, mlp.up_proj])
        self.down = _Linear(mlp.down_proj)
        self.rotary = rotary
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.hidden = config.hidden_dim

    def qkv(self, h: torch.Tensor, B: int, T: int, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H, KV = self.n_heads, self.n_kv_heads
        qkv = self.qkv_proj(h).view(B, T, H + 2 * KV, self.head_dim)
        cos, sin = self.rotary(start, T, qkv.dtype)
        qk = rotate(qkv[:, :, :H + KV].transpose(1, 2), cos, sin)  # (B, n_heads + n_kv_heads, T, D)
        return qk[:, :H], qk[:, H:], qkv[:, :, H + KV:].transpose(1, 2)  # q (B, H, T, D); k, v (B, KV, T, D)

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q (B, H, T, D) over k, v (B, H_kv, S, D), H a multiple of H_kv, without its weights.

    One new query (T == 1) sees every cached key, so it needs no mask (the fixed-shape step gives one over the
    whole cache, (1, S)); with grouped-query attention the query heads of each group are then laid side by side
    as G queries of their key/value head (B, H_kv, G, D), which reads each cached key once, not once per head."""
    B, H, T, D = q.shape
    groups = H // k.shape[1]
    if T == 1:
        if groups == 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = F.scaled_dot_product_attention(q.view(B, H // groups, groups, D), k, v, attn_mask=mask)
        return y.view(B, H, 1, D)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)


def _causal_mask(T: int, S: int, start: int, like: torch.Tensor) -> torch.Tensor:
    """(T, S): 0 where query i (at position start + i) may see key j (j <= start + i), -inf elsewhere."""
    return torch.full((T, S), float("-inf"), device=like.device, dtype=like.dtype).triu_(start + 1)


def _attend_with_weights(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention that also returns its weights: softmax(q k^T / sqrt(D) + mask) as float32 (B, H, T, S),
    and their product with v (B, H, T, D). One fused baddbmm adds the mask, scales and multiplies."""
    B, H, T, D = q.shape
    S = k.shape[2]
    k, v = repeat_kv(k, H // k.shape[1]), repeat_kv(v, H // v.shape[1])  # one map per query head
    scores = torch.baddbmm(mask, q.reshape(B * H, T, D), k.reshape(B * H, S, D).transpose(1, 2), alpha=D ** -0.5)
    # bf16 / fp16 scores are normalised in float32 (the maps are shown and compared in float32).
    weights = scores.softmax(dim=-1) if scores.dtype == torch.float32 else scores.float().softmax(dim=-1)
    y = torch.bmm(weights.to(v.dtype), v.reshape(B * H, S, D))
    return y.view(B, H, T, D), weights.view(B, H, T, S)


class Decoder:
    """An inference-only forward pass over a GPT's weights (no dropout; no autograd unless asked for
    with ForwardOptions.token_embeds), writing K/V into an engine.model.KVCache. Same maths as
    GPT.forward in eval mode. Call it under torch.inference_mode() except for gradients."""

    def __init__(self, model: GPT):
        self.config: ModelConfig = model.config
        # Only tensors are kept (never the module), so a model the app drops can be freed; quantized
        # (int8) embeddings are called as modules, plain tables indexed directly.
        # (The llama family has no position table: pos_emb is None.)
        plain = type(model.tok_emb) is nn.Embedding and (model.pos_emb is None or type(model.pos_emb) is nn.Embedding)
        self.tok_emb = model.tok_emb.weight.detach() if plain else None
        self.pos_emb = model.pos_emb.weight.detach() if plain and model.pos_emb is not None else None
        self.embedding_modules = None if plain else (model.tok_emb, model.pos_emb)
        # Each family's layer class (same five pieces); the loop stays one.
        self.device = model.ln_f.weight.device
        if self.config.rotary:
            rotary = _Rotary(self.config, self.device)
            self.layers = [_LlamaLayer(b, self.config, rotary) for b in model.blocks]
            self.norm_f = _RMSNorm(model.ln_f)
        else:
            self.layers = [_GPT2Layer(b, self.config) for b in model.blocks]
            self.norm_f = _LayerNorm(model.ln_f)
        self.head = _Linear(model.head)
        self.dtype = self.norm_f.weight.dtype
        self.quantized = not plain or self.head.module is not None  # int8: every Linear is quantized

    def new_cache(self, batch: int, capacity: int = KVCache.INITIAL) -> KVCache:
        """An empty KV cache for `batch` rows, with room for `capacity` positions at first (it grows)."""
        return KVCache.empty(self.config, batch, self.device, self.dtype, capacity)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) token embeddings, a new tensor (no positions added): the input of
        ForwardOptions.token_embeds. Call it outside inference mode to take gradients through it."""
        ids = ids.to(self.device)
        if self.tok_emb is not None:
            return self.tok_emb[ids]
        return self.embedding_modules[0](ids).to(self.dtype)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream (..., C) -> float32 logits (..., V): final norm, then the head. Applied to
        each block's output this is the logit lens; on the last block's, it is the model's logits."""
        shape = x.shape
        return self.head(self.norm_f(x.reshape(-1, shape[-1]))).float().view(*shape[:-1], -1)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None,
                options: ForwardOptions | None = None) -> torch.Tensor | ForwardOutput:
        """ids (B, T) continuing at cache.pos (0 without a cache) -> float32 logits (B, V) of the last
        position; with options, a ForwardOutput (see engine/generation/capture.py).

        T > 1 must start an empty cache (a prompt); T == 1 is a decoding step. Without a cache nothing
        is kept for later steps.
        """
        B, T = ids.shape
        C = self.config.emb_dim
        start = cache.pos if cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(f"{start + T} tokens do not fit the context of {self.config.context_length}")
        if T > 1 and start != 0:
            raise ValueError("a multi-token forward must start an empty cache")
        capture = None if options is None else CaptureRun(options, self.config, self.device, self.dtype)
        x = self._embed(ids, start, None if options is None else options.token_embeds)  # (B*T, C)
        mask = None
        if cache is not None:
            cache.reserve(start + T)
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv(layer.norm1(x), B, T, start)
            if cache is not None:
                keys, values = cache.keys[i], cache.values[i]
                keys[:, :, start:start + T] = k
                values[:, :, start:start + T] = v
                if start:
                    k, v = keys[:, :, :start + T], values[:, :, :start + T]
            if capture is not None and options.capture_attention:
                if mask is None:  # the same for every layer
                    mask = _causal_mask(T, start + T, start, q)
                y, weights = _attend_with_weights(q, k, v, mask)
                capture.output.attentions.append(weights)
            else:
                y = _attend(q, k, v)
            y = y.transpose(1, 2)  # (B, T, H, D)
            if capture is not None:
                y = capture.heads(i, y)
            a = layer.out(y.reshape(B * T, -1))
            if capture is not None:
                a = capture.attention_out(i, a, B, T)
            x = x + a
            m = layer.mlp(layer.norm2(x))
            if capture is not None:
                m = capture.mlp_out(i, m, B, T)
            x = x + m
            if capture is not None:
                capture.block_out(x, B, T)
        if cache is not None:
            cache.pos = start + T
        if capture is None:
            return self.head(self.norm_f(x.view(B, T, C)[:, -1])).float()
        out = capture.output
        if options.logits == "last":
            out.logits = self.unembed(x.view(B, T, C)[:, -1])
        elif options.logits == "all":
            out.logits = self.unembed(x.view(B, T, C))
        return out

    def step(self, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache, positions: torch.Tensor) -> torch.Tensor:
        """The fixed-shape decoding step that engine/generation/compiled.py compiles: ids (B, 1) at position
        pos (a 1-element long tensor) -> float32 logits (B, V), same maths as forward(ids, cache) at cache.pos.

        Every shape is the same at every position: K/V are written into the preallocated cache with
        index_copy_ at pos, and attention reads the whole cache under an additive mask built from pos
        (0 where positions <= pos, -inf elsewhere; positions is arange(context_length)) instead of slicing
        it to pos + 1. Cache entries past pos must be finite (a new cache is zeroed for this): they are
        masked, and 0 x a finite value adds exactly nothing. cache.pos is left to the caller.
        """
        B = ids.shape[0]
        x = self._embed(ids, pos, None)  # (B, C)
        # (1, S): the same for every row, head and layer.
        mask = torch.where(positions <= pos, 0.0, float("-inf")).to(x.dtype).view(1, -1)
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv(layer.norm1(x), B, 1, pos)
            keys, values = cache.keys[i], cache.values[i]
            keys.index_copy_(2, pos, k)
            values.index_copy_(2, pos, v)
            y = _attend(q, keys, values, mask)  # (B, H, 1, D)
            x = x + layer.out(y.reshape(B, -1))
            x = x + layer.mlp(layer.norm2(x))
        return self.head(self.norm_f(x)).float()

    def _embed(self, ids: torch.Tensor, start: int | torch.Tensor, token_embeds: torch.Tensor | None
               ) -> torch.Tensor:
        """Token (or the given) embeddings plus learned positions, as (B*T, C). start may be a 1-element
        tensor (T == 1, the fixed-shape step)."""
        B, T = ids.shape
        C = self.config.emb_dim
        if token_embeds is not None:
            if tuple(token_embeds.shape) != (B, T, C):
                raise ValueError(f"token_embeds must have shape {(B, T, C)}, got {tuple(token_embeds.shape)}")
            if token_embeds.requires_grad and self.quantized:
                raise ValueError("int8 layers are not differentiable: take gradients in fp32, bf16 or fp16")
            tok = token_embeds.to(self.device, self.dtype)
        elif self.tok_emb is not None:
            tok = self.tok_emb[ids]
        else:
            tok = self.embedding_modules[0](ids)
        positions = start if isinstance(start, torch.Tensor) else None
        if self.pos_emb is not None:
            pos = self.pos_emb[start:start + T] if positions is None else self.pos_emb[positions]
        elif self.embedding_modules is not None and self.embedding_modules[1] is not None:
            if positions is None:
                positions = torch.arange(start, start + T, device=self.device)
            pos = self.embedding_modules[1](positions)
        else:  # no learned positions (llama family: rotary, in the layers)
            return tok.reshape(B * T, C)
        return (tok + pos).reshape(B * T, C)

    def ablation_means(self, ids: torch.Tensor) -> AblationMeans:
        """Each head's, attention's and MLP's mean output over the positions of ids (B, T): the values
        mean-ablation puts in their place (Ablation(means=...))."""
        out = self.forward(ids, None, ForwardOptions(logits="none", capture_parts=True))
        return AblationMeans(heads=torch.stack([h.mean(dim=(0, 1)) for h in out.head_outputs]),
                             attention=torch.stack([a.mean(dim=(0, 1)) for a in out.attention_outputs]),
                             mlp=torch.stack([m.mean(dim=(0, 1)) for m in out.mlp_outputs]))


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


def as_ids(ids: Sequence[int] | torch.Tensor | np.ndarray, config: ModelConfig, device: torch.device) -> torch.Tensor:
    """One sequence of token ids checked against the model (not empty, within its context and vocabulary) as a
    (1, T) long tensor on `device`, or a ValueError in one line: the input of attention maps and the Inside
    analyses."""
    idx = torch.as_tensor(ids if isinstance(ids, torch.Tensor) else np.asarray(ids, dtype=np.int64))
    if idx.dim() == 2 and idx.shape[0] == 1:
        idx = idx[0]
    if idx.dim() != 1:
        raise ValueError(f"give one sequence of token ids, got shape {tuple(idx.shape)}")
    T = idx.shape[0]
    if T == 0:
        raise ValueError("the text gave no tokens (at least one is needed)")
    if T > config.context_length:
        raise ValueError(f"{T} tokens do not fit the model's context length ({config.context_length})")
    if int(idx.min()) < 0 or int(idx.max()) >= config.vocab_size:
        raise ValueError(f"token ids must be between 0 and {config.vocab_size - 1}")
    return idx.to(device=device, dtype=torch.long).unsqueeze(0)


def decoder_for(model: GPT, precision: str = "fp32") -> Decoder:
    """The (cached) inference forward of a model in a precision."""
    return _decoders.get(model, precision)
