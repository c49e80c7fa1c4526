"""mhdsr.io_utils: output folders named by their config key, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhdsr.errors import ConfigError
from mhdsr.io_utils import make_output_dir, write_text_atomic


def test_make_output_dir_creates_parents(tmp_path: Path) -> None:
    p = make_output_dir(tmp_path / "a" / "b", "output_dir")
    assert p.is_dir() and p == tmp_path / "a" / "b"
    assert make_output_dir(p, "output_dir") == p  # existing folder is fine


def test_make_output_dir_errors_name_the_key(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(
        ConfigError, match=r"config key 'run_dir': cannot create the output folder .*file\.txt"
    ):
        make_output_dir(f, "run_dir")
    with pytest.raises(
        ConfigError, match=r"config key 'output_dir': cannot create .*file\.txt/sub"
    ):
        make_output_dir(f / "sub", "output_dir")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            make_output_dir(ro, "output_dir")


def test_write_text_atomic_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "x.md"
    write_text_atomic(p, "hello")
    assert p.read_text() == "hello" and sorted(os.listdir(tmp_path)) == ["x.md"]
