"""Shared fixtures. Data-dependent tests skip with a clear reason when the data directory is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA_DIR = Path(os.environ.get("VOXPOP_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def dataset_path(name: str) -> Path:
    """Path of one data set under the data dir, or skip the test saying what is missing."""
    p = DATA_DIR / name
    if not p.exists():
        pytest.skip(f"data set '{name}' not found at {p} (set VOXPOP_DATA_DIR to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.skip(f"shared data not found at {DATA_DIR} (set VOXPOP_DATA_DIR)")
    return DATA_DIR


# Real servers (PostgreSQL, Redis, a Kafka-protocol broker) for integration tests: see tests/stack.py.
from tests.stack import stack_endpoints, stack_settings  # noqa: E402,F401
