"""Typed configuration: YAML files + dotted ``key=value`` overrides, validated before any work.

Every command has a dataclass schema (``mhdsr.<stage>.config``). :func:`load_config` merges
schema defaults <- YAML file <- command-line overrides with OmegaConf, which rejects unknown
keys and wrong types; then the schema's own ``validate()`` checks values and cross-field
constraints. All failures raise :class:`~mhdsr.errors.ConfigError` naming the key, so a bad
config never starts work. The resolved config is saved with every output it produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mhdsr.errors import ConfigError

T = TypeVar("T")


def parse_overrides(overrides: Sequence[str]) -> Any:
    """Parse ``["a.b=1", "c=[x,y]"]`` into an OmegaConf node.

    Raises:
        ConfigError: an item is not of the form ``key=value``.
    """
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. max_steps=100)"
            )
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:  # pragma: no cover - grammar errors
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {e}") from None


def load_config(schema: type[T], path: str | Path | None, overrides: Sequence[str] = ()) -> T:
    """Build a validated ``schema`` instance from a YAML file and ``key=value`` overrides.

    Args:
        schema: a dataclass type; may define ``validate(self) -> None`` raising ConfigError.
        path: YAML file (``None``: defaults only).
        overrides: dotted overrides, applied last.

    Returns:
        An instance of ``schema`` (plain dataclass, nested dataclasses for sub-sections).

    Raises:
        ConfigError: missing/unreadable file, unknown key, wrong type, or a failed ``validate``.
    """
    base = OmegaConf.structured(schema)
    layers = [base]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            layers.append(OmegaConf.load(p))
        except Exception as e:  # yaml errors come in several types
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    layers.append(parse_overrides(overrides))
    try:
        merged = OmegaConf.merge(*layers)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        where = f" in {str(path)!r}" if path is not None else ""
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]
        raise ConfigError(f"invalid config{where}: key {key!r}: {msg}") from None
    _validate_tree(obj)
    return obj  # type: ignore[return-value]


def _validate_tree(obj: Any) -> None:
    """Call ``validate()`` on ``obj`` and on every nested dataclass (children first)."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        _validate_tree(getattr(obj, f.name))
    v = getattr(obj, "validate", None)
    if callable(v):
        v()


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain ``dict`` of a config dataclass (for JSON/YAML/checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def to_yaml(obj: Any) -> str:
    """YAML text of a config dataclass (the resolved config saved with every run)."""
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Rebuild a validated ``schema`` instance from :func:`to_dict` output (e.g. a checkpoint).

    Raises:
        ConfigError: ``data`` does not fit the schema.
    """
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except OmegaConfBaseException as e:
        raise ConfigError(f"stored config does not fit {schema.__name__}: {e}") from None
    _validate_tree(obj)
    return obj  # type: ignore[return-value]


def require(cond: bool, key: str, expected: str, got: Any) -> None:
    """Raise ConfigError ``key: expected <expected>, got <got>`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"config key {key!r}: expected {expected}, got {got!r}")
