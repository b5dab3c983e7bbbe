"""Numbers as people read them: parameter counts, SI prefixes."""
from __future__ import annotations

import math


def format_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(n)


def format_si(x: float) -> str:
    """1234 -> '1.23k', 2.5e6 -> '2.5M' (for tokens and tokens/s)."""
    if not math.isfinite(x):
        return "–"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def format_bytes(n: float) -> str:
    """Bytes with a decimal unit, three significant digits: 1234567 -> '1.23 MB'."""
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{int(n)} B"


def unknown_chars_note(chars: list[str], limit: int = 5) -> str:
    """'2 characters not in the vocabulary (é, 日) become “�”' for characters a tokenizer cannot give back."""
    if not chars:
        return ""
    shown = ", ".join("␣" if c == " " else repr(c)[1:-1] if not c.isprintable() or c.isspace() else c
                      for c in chars[:limit])
    more = f", … {len(chars) - limit:,} more" if len(chars) > limit else ""
    n = len(chars)
    return f"{n:,} character{'s' if n != 1 else ''} not in the vocabulary ({shown}{more}) become “\ufffd”"
