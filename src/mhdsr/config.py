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

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mhdsr.errors import ConfigError

T = TypeVar("T")


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``["a.b=1", "c=[x,y]"]`` into ``(item, OmegaConf node)`` pairs (values are YAML).

    Raises:
        ConfigError: an item is not of the form ``key=value`` or its value is not valid YAML.
    """
    out = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. max_steps=100)"
            )
        try:
            out.append((item, OmegaConf.from_dotlist([item])))
        except Exception as e:  # YAML scanner/parser errors are not OmegaConf errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({first}); quote lists in the shell, "
                "e.g. 'model.mults=[1,2,4]', and glob brackets as 'key=[\"seed_000[12]\"]'"
            ) from None
    return out


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
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a folder; expected a YAML file")
        if p.exists() and not p.is_file():
            raise ConfigError(f"config file {str(p)!r} is not a regular file; expected a YAML file")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = OmegaConf.load(p)
        except Exception as e:  # yaml errors come in several types
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if isinstance(loaded, DictConfig) and len(loaded) == 0 and not _has_yaml_content(p):
            raise ConfigError(
                f"config file {str(p)!r} is empty (write {{}} to mean defaults + overrides only)"
            )
        if not isinstance(loaded, DictConfig):
            raise ConfigError(
                f"config file {str(p)!r} must hold a mapping of keys (key: value), not a list"
            )
        layers.append(loaded)
    try:
        merged = OmegaConf.merge(*layers)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(
            f"invalid config {str(path)!r}: key {getattr(e, 'full_key', None)!r}: {_explain(str(e))}"
        ) from None
    for item, node in parse_overrides(overrides):  # one at a time: an error names its override
        try:
            merged = OmegaConf.merge(merged, node)
        except (OmegaConfBaseException, TypeError, ValueError) as e:
            key = item.split("=", 1)[0]
            raise ConfigError(
                f"override {item!r} (config key {key!r}): {_explain(str(e))}"
            ) from None
    try:
        obj = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(
            f"invalid config: key {getattr(e, 'full_key', None)!r}: {_explain(str(e))}"
        ) from None
    _validate_tree(obj)
    return obj  # type: ignore[return-value]


def require_folder(path: str | Path, key: str) -> Path:
    """``path`` as a Path if it is an existing folder.

    Raises:
        ConfigError: it is not, naming config key ``key`` and the working directory (relative
            paths are the usual cause).
    """
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"config key {key!r}: {str(p)!r} is not a folder (cwd {Path.cwd()})")
    return p


def _has_yaml_content(path: Path) -> bool:
    """True when the file holds a YAML value (``{}`` counts), not only blanks and comments."""
    return any(
        ln.strip() and not ln.lstrip().startswith("#") for ln in path.read_text().splitlines()
    )


def _explain(msg: str) -> str:
    """OmegaConf's first error line, translated where it only names OmegaConf internals."""
    first = msg.strip().splitlines()[0] if msg.strip() else msg
    if "is not a ListConfig" in first or "Cannot convert 'ListConfig'" in first:
        return f"{first} -> expected a list here, e.g. key=[a,b] (or a single value where a list is not expected)"
    if "Merge error" in first and "is not a subclass of" in first:
        return f"{first} -> this key is a section (a mapping of sub-keys), set its sub-keys instead, e.g. section.key=value"
    if "is not Optional" in first:
        return f"{first} -> this key cannot be null"
    if "incompatible container types" in first:
        return f"{first} -> a mapping was given where a list or value is expected (or the reverse)"
    return first


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
