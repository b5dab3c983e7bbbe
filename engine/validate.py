"""Checks for values that come from files a user did not write by hand with us: checkpoints, tokenizer
files, settings. Hostile but well-formed data (a number where a string goes, 2**63 where a step count
goes, JSON nested 100,000 levels deep, a name full of escape sequences) must become one clear line,
never an OverflowError, a RecursionError or a panic deep inside a library.

Every check raises ValueError with a one-line message naming the field; callers add the file's name.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 64  # our own metadata nests 4 levels; anything much deeper is hostile
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests lists and objects (walked without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item if isinstance(child, (list, dict)))
    return deepest


def parse_json(text: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing values nested more than `max_depth` levels.

    Python's parser recurses once per level and stops with RecursionError about a thousand levels down;
    that becomes this one-line error too. The depth of what it returns is then measured on the parsed
    value (cheap: it walks containers, not text).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} is not text")
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        too_deep = True
    except ValueError as e:
        where = f" ({e.msg} at line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise ValueError(f"{what} is not valid JSON{where}") from None
    else:
        too_deep = isinstance(value, (list, dict)) and json_depth(value) > max_depth
    if too_deep:
        raise ValueError(f"{what} is not valid JSON (nested more than {max_depth} levels deep)")
    return value


def whole_number(value: Any, what: str, lo: int, hi: int) -> int:
    """An int (not a bool, not a float) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {short_repr(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be between {lo:,} and {hi:,}, got {short_repr(value)}")
    return value


def number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite int or float (not a bool) in [lo, hi], as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {short_repr(value)}")
    try:
        as_float = float(value)
    except OverflowError:  # an int too big for a float
        raise ValueError(f"{what} must be between {lo:g} and {hi:g}, got {short_repr(value)}") from None
    if not math.isfinite(as_float) or not lo <= as_float <= hi:
        raise ValueError(f"{what} must be a finite number between {lo:g} and {hi:g}, got {short_repr(value)}")
    return as_float


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {short_repr(value)}")
    return value


def text(value: Any, what: str, max_chars: int, *, allow_empty: bool = True) -> str:
    """A str of at most max_chars characters (and not empty unless allowed)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {short_repr(value)}")
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value):,} characters long, more than the {max_chars:,} allowed")
    if not allow_empty and not value:
        raise ValueError(f"{what} must not be empty")
    return value


def number_list(value: Any, what: str, max_len: int, *, lo: float = -1e300, hi: float = 1e300,
                allow_null: bool = False) -> list[float | None]:
    """A list of at most max_len finite numbers in [lo, hi] (and nulls if allowed)."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of numbers, got {short_repr(value)}")
    if len(value) > max_len:
        raise ValueError(f"{what} has {len(value):,} entries, more than the {max_len:,} allowed")
    for item in value:
        if item is None and allow_null:
            continue
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"{what} must hold only numbers, found {short_repr(item)}")
        if isinstance(item, float):
            ok = math.isfinite(item) and lo <= item <= hi
        else:
            ok = lo <= item <= hi
        if not ok:
            raise ValueError(f"{what} holds {short_repr(item)}, outside {lo:g}..{hi:g}")
    return value


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() for a message: cut to `limit` characters (a hostile value may be megabytes long)."""
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value):,} items"
    try:
        text_ = repr(value)
    except (RecursionError, ValueError):  # ValueError: an int with too many digits to print
        return f"a {type(value).__name__}"
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."


def printable(text_: str, limit: int = 300) -> str:
    """Text from a file made safe for one line of a terminal or a log: control characters (ANSI escapes,
    newlines, bidirectional overrides) shown as escapes, and cut to `limit` characters."""
    text_ = str(text_)
    if len(text_) > limit:
        text_ = text_[: limit - 3] + "..."
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text_)
