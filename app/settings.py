"""Persistent choices (window geometry, form values, recent files) in one QSettings store.

The store is the platform's usual place for "LLM Playground". Setting the environment variable
LLM_PLAYGROUND_SETTINGS to a file path keeps everything in that INI file instead: tests and
scripts use it so they never read or write a person's real settings.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

ORGANIZATION = "LLM Playground"
APPLICATION = "LLM Playground"
SETTINGS_ENV = "LLM_PLAYGROUND_SETTINGS"
MAX_RECENT = 8


def open_settings() -> QSettings:
    """A QSettings for the app: the override file if LLM_PLAYGROUND_SETTINGS is set, else the user's store."""
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return QSettings(str(Path(override).expanduser()), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class Settings:
    """Typed access to the few values the app keeps between launches."""

    def __init__(self) -> None:
        self._qs = open_settings()

    @property
    def location(self) -> str:
        return self._qs.fileName()

    def value(self, key: str, default: Any = None) -> Any:
        """The stored value, converted to the type of `default` (QSettings INI files store strings)."""
        raw = self._qs.value(key, default)
        if raw is None or default is None:
            return raw
        try:
            if isinstance(default, bool):
                return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
            if isinstance(default, int):
                return int(raw)
            if isinstance(default, float):
                return float(raw)
            if isinstance(default, str):
                return str(raw)
        except (TypeError, ValueError):
            return default
        return raw

    def set_value(self, key: str, value: Any) -> None:
        self._qs.setValue(key, value)

    def sync(self) -> None:
        self._qs.sync()

    # -------------------------------------------------- recent files

    def recent_files(self) -> list[str]:
        raw = self._qs.value("recent_files", [])
        if isinstance(raw, str):  # QSettings gives a bare string for a one-item list
            raw = [raw]
        return [str(p) for p in (raw or []) if p]

    def add_recent_file(self, path: str | os.PathLike) -> list[str]:
        path = str(Path(path).resolve())
        files = [path] + [p for p in self.recent_files() if p != path]
        files = files[:MAX_RECENT]
        self._qs.setValue("recent_files", files)
        return files

    def remove_recent_file(self, path: str) -> list[str]:
        files = [p for p in self.recent_files() if p != path]
        self._qs.setValue("recent_files", files)
        return files
