"""The GPT model, read top to bottom: each family's attention, MLP and block, then the whole model.

Two families (ModelConfig.arch), one model class that picks its blocks by family:
- gpt2: learned positions, LayerNorm, GELU MLP. The layout (names and shapes of every tensor) matches
  GPT-2 so that its weights load exactly (see engine/hf_import.py).
- llama (also Qwen2, Mistral): rotary positions (engine/rope.py), RMSNorm, SwiGLU MLP and grouped-query
  attention, with the same maths as transformers' modeling_llama. Tensor names: tok_emb, blocks.N.ln1 /
  ln2 (the RMSNorms), blocks.N.attn.q_proj / k_proj / v_proj / out_proj, blocks.N.mlp.gate_proj / up_proj /
  down_proj, ln_f, head (absent from checkpoints when tied).

This is the training forward (dropout, autograd, loss); attention goes through
`F.scaled_dot_product_attention`, which never builds the T x T matrix. Inference, with its KV cache,
attention maps and other captures, is engine/generation/forward.py's `Decoder` over these weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.rope import RotaryTables, rotate


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding (engine.generation's Decoder).

    Room grows as positions are written (`reserve`: doubling, at most context_length), so a model with a long
    context holds only what its text needs. `pos` is how many positions are filled; the decoder writes the
    new positions and advances it. With grouped-query attention there are n_kv_heads per layer, not n_heads.
    """

    keys: list[torch.Tensor]  # n_layers x (B, n_kv_heads, capacity, head_dim)
    values: list[torch.Tensor]
    pos: int = 0
    limit: int = 0  # the context length: the most positions it will ever hold

    INITIAL = 256  # positions allocated at first (or the whole context, if shorter)

    @classmethod
    def empty(cls, config: ModelConfig, batch_size: int, device: torch.device | str,
              dtype: torch.dtype = torch.float32, capacity: int = INITIAL) -> KVCache:
        shape = (batch_size, config.n_kv_heads, min(capacity, config.context_length), config.head_dim)
        keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        return cls(keys, values, 0, config.context_length)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, length: int) -> None:
        """Room for `length` positions (up to the context length), keeping the filled ones."""
        if length <= self.capacity:
            return
        size = min(max(length, 2 * self.capacity), max(self.limit, length))
        for tensors in (self.keys, self.values):
            for i, old in enumerate(tensors):
                grown = old.new_empty((*old.shape[:2], size, old.shape[3]))
                grown[:, :, :self.pos] = old[:, :, :self.pos]
                tensors[i] = grown


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        # One matmul for query, key and value; GPT-2 calls it c_attn.
        self.qkv = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.emb_dim, config.emb_dim, bias=True)
        self.drop_rate = config.drop_rate
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_heads, T, head_dim)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        dropout_p = self.drop_rate if self.training else 0.0
        if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
            y = _causal_attention_bf16_cpu(q, k, v, dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.out_proj(y))


def _causal_attention_bf16_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal attention as two batched matmuls, for bf16 training on a CPU.

    There, PyTorch's fused (flash) CPU kernel takes about twice as long forward + backward as plain bf16
    matmuls at the context lengths this app trains (measured 23.6 vs 11.0 ms at 8 x 6 heads x 256 x 64);
    the T x T scores it materialises are small there. The mask is added inside the first matmul (baddbmm).
    """
    B, H, T, D = q.shape
    mask = torch.full((T, T), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    scores = torch.baddbmm(mask.expand(B * H, T, T), q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           alpha=1.0 / math.sqrt(D))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    return (weights @ v.reshape(B * H, T, D)).view(B, H, T, D)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.emb_dim, config.hidden_dim)  # 4 x emb_dim in every GPT-2
        self.proj = nn.Linear(config.hidden_dim, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh-approximated GELU, as GPT-2; one fused kernel, no Python-level formula.
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.emb_dim, eps=config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.emb_dim, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # rope is unused: GPT-2's positions were added to x before the first block.
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


# ---------------------------------------------------------------- the llama family

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * weight, normalised in float32 whatever x's dtype, then scaled in x's dtype (as transformers)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm: a learned scale, no shift and no mean subtraction (the llama family's norm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, n_kv_heads, T, D) -> (B, n_kv_heads * groups, T, D): each key/value head serves `groups` query heads."""
    if groups == 1:
        return x
    B, H, T, D = x.shape
    return x[:, :, None].expand(B, H, groups, T, D).reshape(B, H * groups, T, D)


class GroupedQueryAttention(nn.Module):
    """Causal attention with rotary positions; n_heads query heads share n_kv_heads key/value heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.emb_dim, q, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.emb_dim, kv, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.emb_dim, kv, bias=config.qkv_bias)
        self.out_proj = nn.Linear(q, config.emb_dim, bias=False)
        self.drop_rate = config.drop_rate
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, n_heads, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv_heads, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        groups = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        dropout_p = self.drop_rate if self.training else 0.0
        if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
            y = _causal_attention_bf16_cpu(q, k, v, dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.resid_drop(self.out_proj(y))


class SwiGLU(nn.Module):
    """The llama family's MLP: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.emb_dim, config.hidden_dim, bias=False)
        self.up_proj = nn.Linear(config.emb_dim, config.hidden_dim, bias=False)
        self.down_proj = nn.Linear(config.hidden_dim, config.emb_dim, bias=False)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = RMSNorm(config.emb_dim, config.norm_eps)
        self.attn = GroupedQueryAttention(config)
        self.ln2 = RMSNorm(config.emb_dim, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


# ---------------------------------------------------------------- the whole model

# Layers that add into the residual stream: their init is scaled down with depth (GPT-2).
_RESIDUAL_OUTPUTS = ("attn.out_proj.weight", "mlp.proj.weight", "mlp.down_proj.weight")


class GPT(nn.Module):
    """A decoder-only transformer of either family (config.arch): token embedding, blocks, final norm, head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        # Learned positions (gpt2); the llama family turns queries and keys instead (engine/rope.py).
        self.pos_emb = None if config.rotary else nn.Embedding(config.context_length, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)
        block = LlamaBlock if config.rotary else Block
        self.blocks = nn.ModuleList(block(config) for _ in range(config.n_layers))
        self.ln_f = RMSNorm(config.emb_dim, config.norm_eps) if config.rotary else \
            nn.LayerNorm(config.emb_dim, eps=config.norm_eps)
        self.head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        self.tie_weights()
        self.apply(self._init_weights)
        # GPT-2: scale the init of layers that add into the residual stream by 1/sqrt(2 * n_layers).
        for name, p in self.named_parameters():
            if name.endswith(_RESIDUAL_OUTPUTS):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    def tie_weights(self) -> None:
        """Weight tying (config.tie_embeddings, always in GPT-2): the output layer reuses the token embedding
        table, one tensor for both. Loading with assign=True breaks the tie; this restores it."""
        if self.config.tie_embeddings:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        The training forward (dropout, autograd, loss). Inference (generation, attention maps, the
        logit lens) runs through engine.generation's Decoder, the same maths without dropout.
        """
        B, T = idx.shape
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than the context length {self.config.context_length}")
        x = self.tok_emb(idx)  # (B, T, emb_dim)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        else:  # the llama family turns queries and keys by position instead
            rope = RotaryTables(self.config, idx.device)(0, T, x.dtype)  # cos, sin: (T, head_dim)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Learned parameters, the tied head counted once; non_embedding leaves out positions."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N + 12 * L * H * Q * T (PaLM appendix B, as nanoGPT)."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layers * c.n_heads * c.head_dim * c.context_length

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.AdamW:
        """AdamW with one rule: 2-D weights (matmuls, embeddings) decay; biases and LayerNorms do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # One fused kernel per step instead of a dozen passes over every tensor: ~4x faster than the
        # default on a CPU, and the usual choice on CUDA. Other devices get the default implementation.
        kwargs = {"fused": True} if device_type in ("cuda", "cpu") else {}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)
