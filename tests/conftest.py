"""Shared fixtures: one prepared data root per test session (cached across runs)."""

from pathlib import Path

import pytest

from dmm_fed.data import default_data_root, prepare


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$DMM_FED_DATA`` or the default root, prepared once (a no-op when already cached)."""
    root = default_data_root()
    prepare(root)
    return root
