"""Shared test set-up: keep every cache (token arrays, the measured peak FLOP/s) and the data folder (run logs)
out of $HOME, and skip the tests marked `cuda` where there is no CUDA GPU (scripts/gpu-check runs them on one).

Tests that need their own cache folder still set LLM_PLAYGROUND_CACHE with monkeypatch.
The helper modules of tests/engine (hf_fixtures: small Hugging Face folders; hub_server: a local hub) are
importable from every test folder, so the app tests build the same models.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine"))

_CACHE = tempfile.mkdtemp(prefix="llm-playground-test-cache-")
os.environ["LLM_PLAYGROUND_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# The data folder too: training runs log themselves there (engine/training/runlog.py), never into the user's own.
_DATA = tempfile.mkdtemp(prefix="llm-playground-test-data-")
os.environ["LLM_PLAYGROUND_DATA"] = _DATA
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu-check on a machine with one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
