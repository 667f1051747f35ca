"""Fixtures shared by the whole suite.

The real data sets are read from RLHF_DATA_DIR (CI points it at ../shared/data); they
are never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.kafka_plugin", "tests.postgres_plugin", "tests.triton_plugin"]

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared data sets (SST-2, IMDB, HH-RLHF, ChnSentiCorp, ...)."""
    path = Path(os.environ.get("RLHF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "sst2").is_dir():
        pytest.fail(f"data directory {path} has no sst2/; set RLHF_DATA_DIR to shared/data")
    return path
