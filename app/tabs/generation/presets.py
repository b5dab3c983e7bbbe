"""Sampling presets: a column's five knobs as a small JSON file.

The built-in presets (Greedy, Balanced, Creative) ship as JSON in resources/presets/sampling/, in the
same format a person saves from the tab, so they double as examples of it:
    {"name": "Balanced", "temperature": 0.7, "top_k": 50, "top_p": 0.9, "min_p": 0.0,
     "repetition_penalty": 1.1}
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from app.resources import RESOURCES
from engine import atomic_write_text, parse_json, read_regular

PRESET_DIR = RESOURCES / "presets" / "sampling"
MAX_PRESET_BYTES = 1 << 20
BUILTIN_ORDER = ("Greedy", "Balanced", "Creative")
CUSTOM = "Custom"


@dataclass(frozen=True)
class SamplingSettings:
    """The per-column knobs, as the sliders read them (temperature 0 = greedy, top-k 0 = off)."""

    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.9
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0),
            "repetition_penalty": (1.0, 2.0),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number, 0 (off) or more, got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingSettings:
        """Read the knobs from a JSON object; missing knobs keep their default, others are ignored."""
        if not isinstance(data, dict):
            raise ValueError("a sampling preset must be a JSON object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if not values:
            raise ValueError("no sampling settings found (expected temperature, top_k, top_p, min_p, ...)")
        if isinstance(values.get("top_k"), float) and values["top_k"].is_integer():
            values["top_k"] = int(values["top_k"])
        return cls(**values)

    def same_as(self, other: SamplingSettings) -> bool:
        """Equal up to the sliders' resolution."""
        return all(abs(float(getattr(self, f.name)) - float(getattr(other, f.name))) < 1e-6 for f in fields(self))


def load_preset_file(path: str | Path) -> tuple[str, SamplingSettings]:
    """(name, settings) from a preset JSON file; ValueError / OSError with a clear message."""
    path = Path(path)
    try:  # a regular file of sane size only: a FIFO picked in the dialog must not block the window
        text = read_regular(path, MAX_PRESET_BYTES, "preset file").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not a preset file (not UTF-8 text)") from None
    data = parse_json(text, path.name)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a preset file (not a JSON object)")
    settings = SamplingSettings.from_dict(data)
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else path.stem
    return name, settings


def save_preset_file(path: str | Path, name: str, settings: SamplingSettings) -> None:
    atomic_write_text(path, json.dumps({"name": name, **settings.to_dict()}, indent=2) + "\n")


def builtin_presets(folder: Path = PRESET_DIR) -> dict[str, SamplingSettings]:
    """The shipped presets, Greedy / Balanced / Creative first; unreadable files are skipped."""
    found: dict[str, SamplingSettings] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            name, settings = load_preset_file(path)
        except (ValueError, OSError):
            continue
        found[name] = settings
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def match_preset(settings: SamplingSettings, presets: dict[str, SamplingSettings],
                 top_k_max: int | None = None) -> str:
    """The name of the preset these settings equal, or "Custom". With top_k_max (the vocabulary),
    a preset's larger k counts as that maximum, as the slider shows it."""
    for name, preset in presets.items():
        if top_k_max is not None and preset.top_k > top_k_max:
            preset = replace(preset, top_k=top_k_max)
        if preset.same_as(settings):
            return name
    return CUSTOM
