"""Set-up shared by the app tests."""
from __future__ import annotations

import gc

import pytest


@pytest.fixture(autouse=True)
def collect_widgets_between_tests():
    """Collect each test's dropped widgets right after it, while no worker thread runs. Left to the garbage
    collector's own timing, they were collected in the middle of a later test's model loading, and their
    deletion was seen to deadlock with the worker thread (about 1 run in 5 of the window tests)."""
    yield
    gc.collect()
