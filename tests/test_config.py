"""mhdsr.config: YAML + overrides -> validated dataclass; every failure is a ConfigError naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mhdsr.config import load_config
from mhdsr.errors import ConfigError


@dataclasses.dataclass
class Inner:
    width: int = 16
    mults: list[int] = dataclasses.field(default_factory=lambda: [1, 2])

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")


@dataclasses.dataclass
class Schema:
    name: str = "run"
    steps: int = 10
    model: Inner = dataclasses.field(default_factory=Inner)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_file_then_overrides_in_order(tmp_path: Path) -> None:
    p = _write(tmp_path, "steps: 20\nmodel:\n  width: 8\n")
    cfg = load_config(Schema, p, ["model.mults=[1,2,4]", "steps=30"])
    assert isinstance(cfg, Schema) and isinstance(cfg.model, Inner)
    assert (cfg.name, cfg.steps, cfg.model.width, cfg.model.mults) == ("run", 30, 8, [1, 2, 4])


@pytest.mark.parametrize(
    "text,overrides,match",
    [
        ("", [], "is empty"),
        ("# only a comment\n\n", [], "is empty"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("steps: [1, 2\n", [], "not valid YAML"),
        ("stepz: 3\n", [], "stepz"),
        ("steps: ten\n", [], "steps"),
        ("steps: 3\n", ["model.width=0"], "model.width must be > 0"),
        ("steps: 3\n", ["model.depth=2"], "model.depth"),
        ("steps: 3\n", ["steps"], "not of the form key=value"),
        ("steps: 3\n", ["model.mults=[1,2"], "not valid YAML"),
        ("steps: 3\n", ["model=3"], "section"),
    ],
)
def test_errors_name_the_problem(
    tmp_path: Path, text: str, overrides: list[str], match: str
) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        load_config(Schema, p, overrides)


def test_explicit_empty_mapping_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(Schema, _write(tmp_path, "{}\n"), ["steps=3"])
    assert (cfg.name, cfg.steps, cfg.model.width) == ("run", 3, 16)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Schema, tmp_path / "nope.yaml")
