"""Shared fixtures. The bundled real AthenaK sample lives in data/athenak (see its README)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "athenak"
HI = DATA / "mri256_nu3e-5"
LO = DATA / "mri128_nu3e-5"

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"bundled AthenaK sample missing: {DATA}"
    return DATA
