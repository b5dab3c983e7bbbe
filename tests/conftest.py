"""Shared test set-up: keep every cache (token arrays, the measured peak FLOP/s) out of $HOME.

Tests that need their own cache folder still set LLM_PLAYGROUND_CACHE with monkeypatch.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="llm-playground-test-cache-")
os.environ["LLM_PLAYGROUND_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
