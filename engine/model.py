"""The GPT model, read top to bottom: attention, MLP, block, then the whole model.

The layout (names and shapes of every tensor) matches GPT-2 so that its weights load exactly
(see engine/hf_import.py). This is the training forward (dropout, autograd, loss); attention goes through
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


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding (engine.generation's Decoder),
    preallocated to context_length.

    `pos` is how many positions are filled; the model writes the new positions and advances it.
    """

    keys: list[torch.Tensor]  # n_layers x (B, n_heads, context_length, head_dim)
    values: list[torch.Tensor]
    pos: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, batch_size: int, device: torch.device | str,
              dtype: torch.dtype = torch.float32) -> KVCache:
        shape = (batch_size, config.n_heads, config.context_length, config.head_dim)
        keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        return cls(keys, values, 0)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]


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
        self.fc = nn.Linear(config.emb_dim, config.hidden_dim)
        self.proj = nn.Linear(config.hidden_dim, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh-approximated GELU, as GPT-2; one fused kernel, no Python-level formula.
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.emb_dim)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.emb_dim)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.emb_dim)
        self.head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        # Weight tying: the output layer reuses the token embedding table (as GPT-2).
        self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: scale the init of layers that add into the residual stream by 1/sqrt(2 * n_layers).
        for name, p in self.named_parameters():
            if name.endswith("attn.out_proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

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
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, emb_dim)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Learned parameters, the tied head counted once; non_embedding leaves out positions."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
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
