"""Tests that need a CUDA device: every test here is marked `gpu` and is skipped, saying why, where there is none.

`make test` collects them everywhere and they run on a CUDA machine; `make test-fast` deselects them (`-m "not gpu"`).
"""

from __future__ import annotations

import importlib.util

import pytest


def _no_cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "needs torch with CUDA (the worker extra is not installed)"
    import torch

    return None if torch.cuda.is_available() else "needs a CUDA device (torch.cuda.is_available() is False)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip this folder's tests without CUDA; refuse one that is not marked `gpu`, so `-m "not gpu"` leaves it out."""
    if item.get_closest_marker("gpu") is None:
        pytest.fail(f"{item.nodeid}: tests under tests/gpu/ are marked `gpu` (pytestmark = pytest.mark.gpu)")
    reason = _no_cuda_reason()
    if reason is not None:
        pytest.skip(reason)
