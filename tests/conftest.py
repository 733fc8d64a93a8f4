"""Shared test set-up: fixture paths and the torch gate for live reference tests.

Tests that compare against a torch reference *live* take the ``torch`` fixture. Without torch they
skip (the committed fixtures in tests/fixtures still prove parity); with
``AUDIOGEN_REQUIRE_TORCH=1`` (set by .ci/run) a missing torch is a failure, so CI never skips them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import audiogen_core  # noqa: F401  - preloads OpenBLAS before anything imports mlx
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def torch() -> ModuleType:
    try:
        mod = importlib.import_module("torch")
    except ImportError:
        if os.environ.get("AUDIOGEN_REQUIRE_TORCH", "") not in ("", "0"):
            pytest.fail("AUDIOGEN_REQUIRE_TORCH is set but torch is not importable")
        pytest.skip("torch not installed: live reference test (committed fixtures still ran)")
    mod.manual_seed(0)
    mod.set_num_threads(2)
    return mod
