"""The inference forward: one pass over a GPT's weights with a KV cache, no dropout, no autograd.

Every inference path of the engine runs through `Decoder.forward`: generation (prompt, then one token per
step), attention capture (`capture_attention=True` also returns each layer's softmax weights), and the
training run's samples. Decoding is memory-bound (every step reads all the weights), so matmuls are laid out
for the CPU's BLAS (see `_Linear`): one row multiplies pre-transposed (in, out) copies of the wide matrices
with `addmm`, several rows multiply the model's own (out, in) weights by the transposed activations.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.generation.precision import prepare_for_inference
from engine.model import GPT, KVCache

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
