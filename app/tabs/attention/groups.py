"""Grouped-query attention: which key/value group a query head reads.

Llama-family models give several query heads one key/value head (transformers' `repeat_kv`): with
n_heads query heads and n_kv_heads groups, head h reads group h // (n_heads // n_kv_heads). A model
without groups (GPT-2, n_kv_heads absent or equal to n_heads) has none, and the labels say nothing.
"""
from __future__ import annotations

from typing import Any


def kv_heads(config: Any) -> tuple[int | None, int | None]:
    """(n_heads, n_kv_heads) of a model config; n_kv_heads None when every head has its own keys and values."""
    if config is None:
        return None, None
    n_heads = getattr(config, "n_heads", None)
    n_kv = getattr(config, "n_kv_heads", None)
    if not n_heads or not n_kv or n_kv >= n_heads or n_heads % n_kv:
        return n_heads, None
    return n_heads, n_kv


def kv_group(head: int, n_heads: int | None, n_kv_heads: int | None) -> int | None:
    """The key/value group query head `head` reads, or None without grouped-query attention."""
    if not n_heads or not n_kv_heads or n_kv_heads >= n_heads or head < 0:
        return None
    return head // (n_heads // n_kv_heads)


def kv_group_label(config: Any, head: int) -> str:
    """"kv group 1 (heads 4–7 share its keys and values)" for a title, or "" without groups."""
    n_heads, n_kv = kv_heads(config)
    group = kv_group(head, n_heads, n_kv)
    if group is None:
        return ""
    size = n_heads // n_kv
    return f"kv group {group} (heads {group * size}–{group * size + size - 1} share its keys and values)"
