"""Shared test set-up: offline model loading, the real-data folder, and thread limits for a 2-core machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Weights ship inside pip packages; a test must never try a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data_dir() -> Path:
    """`TRIBIND_SHARED_DATA`, else ../shared/data beside the checkout."""
    configured = os.environ.get("TRIBIND_SHARED_DATA")
    return Path(configured) if configured else (REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real public data not found at {path}; set TRIBIND_SHARED_DATA to the shared/data folder")
    return path
