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


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory) -> Path:
    """Shards of the bundled sample built once per session with configs/shard/demo.yaml."""
    from mhdsr.cli import main

    out = tmp_path_factory.mktemp("demo_shards") / "shards"
    assert (
        main(
            [
                "shard",
                "build",
                "--config",
                str(REPO / "configs/shard/demo.yaml"),
                f"output_dir={out}",
            ]
        )
        == 0
    )
    return out
