"""Hostile checkpoints for the fault tests (engine and app): rewrite a good file's header, mutate one field of
its metadata, and a hypothesis strategy that picks a field and a mutation.

The metadata of a checkpoint is a dict of JSON strings; `fields(metadata)` lists every place in it (each
metadata key, every key of the JSON objects inside, the first item of every list), and `mutate` replaces
the value at one place with something hostile: another JSON type, huge or negative numbers, 1e309, NaN,
very long or control-character strings, nesting 100,000 levels deep, or removes it, or adds a field.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested 100,000 levels deep
HOSTILE_TEXT = "\x1b[31m<b>red</b>\x1b[0m\u202e\x00\n"

# Each mutation: (name, replacement). A replacement that is a `Raw` is JSON text put in as it is.


class Raw(str):
    """JSON text spliced in verbatim (for values json.dumps would not write, such as 1e309)."""


MUTATIONS: list[tuple[str, Any]] = [
    ("null", None), ("true", True), ("false", False), ("zero", 0), ("minus one", -1), ("negative", -(2**40)),
    ("2^31", 2**31), ("2^63", 2**63), ("2^64", 2**64), ("10^12", 10**12), ("10^30", 10**30),
    ("huge int", Raw("9" * 5000)), ("float", 0.5), ("tiny float", 1e-300), ("1e309", Raw("1e309")),
    ("-1e309", Raw("-1e309")), ("NaN", Raw("NaN")), ("empty string", ""), ("number as string", "0.001"),
    ("control characters", HOSTILE_TEXT), ("long string", "x" * 200_000), ("empty list", []),
    ("list", [1, 2, 3]), ("list of strings", ["a", "b"]), ("empty object", {}), ("object", {"a": 1}),
    ("deep nesting", Raw(DEEP)), ("nested list", [[[[[[[[1]]]]]]]]), ("delete", "<delete>"),
]


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_header(path: str | Path, header: dict[str, Any], data: bytes, raw_header: str | None = None) -> None:
    encoded = (raw_header if raw_header is not None else json.dumps(header)).encode()
    encoded += b" " * (-len(encoded) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def metadata_of(path: str | Path) -> dict[str, Any]:
    """The metadata with every JSON value parsed."""
    header, _ = read_header(path)
    out = {}
    for key, value in header["__metadata__"].items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def fields(meta: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every place in the parsed metadata: a path of keys / list indexes from the top."""
    places: list[tuple[Any, ...]] = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        places.append(path)
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, path + (key,))
        elif isinstance(value, list) and value:
            walk(value[0], path + (0,))

    for key, value in meta.items():
        walk(value, (key,))
    return places


def _dump(value: Any) -> str:
    """JSON with Raw pieces spliced in (json.dumps cannot write them)."""
    marks: dict[str, str] = {}

    def swap(v: Any) -> Any:
        if isinstance(v, Raw):
            mark = f"@@RAW{len(marks)}@@"
            marks[mark] = str(v)
            return mark
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))
    for mark, raw in marks.items():
        text = text.replace(json.dumps(mark), raw)
    return text


def mutate(src: str | Path, dst: str | Path, place: tuple[Any, ...], replacement: Any) -> None:
    """Copy checkpoint `src` to `dst` with the metadata value at `place` replaced (or deleted, or, for
    "<add>", a new field next to it)."""
    header, data = read_header(src)
    meta = metadata_of(src)
    top = place[0]
    if len(place) == 1:
        if replacement == "<delete>":
            meta.pop(top)
        else:
            meta[top] = replacement
    else:
        parent = meta[top]
        for key in place[1:-1]:
            parent = parent[key]
        if replacement == "<delete>":
            if isinstance(parent, dict):
                parent.pop(place[-1])
            else:
                parent.pop(place[-1])
        else:
            parent[place[-1]] = replacement
    # Metadata values are strings holding JSON (or, for format / format_version, plain strings).
    header["__metadata__"] = {
        k: (v if isinstance(v, str) and k in ("format", "format_version") else _dump(v)) for k, v in meta.items()
    }
    write_header(dst, header, data)


def mutations(meta: dict[str, Any]) -> st.SearchStrategy[tuple[tuple[Any, ...], str, Any]]:
    """(place, mutation name, replacement) over every field of `meta` and every mutation."""
    return st.tuples(st.sampled_from(fields(meta)), st.sampled_from(MUTATIONS)).map(
        lambda pair: (pair[0], pair[1][0], pair[1][1]))
