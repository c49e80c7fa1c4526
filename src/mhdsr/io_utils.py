"""Small file helpers: atomic writes (temporary name in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tmp_name(path: str | Path) -> Path:
    """Temporary sibling of ``path`` (same folder, so the final ``os.replace`` is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block finishes without error.

    On an exception the temporary file is removed and ``path`` is left untouched, so readers
    never see a half-written file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (fsync before rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def make_output_dir(path: str | Path, key: str) -> Path:
    """Create the output folder ``path`` (and its parents) named by config key ``key``.

    Returns:
        The folder as a Path.

    Raises:
        ConfigError: the folder cannot be created or written (a file is in the way, no
            permission, read-only file system), naming ``key`` and the reason.
    """
    from mhdsr.errors import ConfigError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"config key {key!r}: cannot create the output folder {str(p)!r} ({e.strerror or e})"
        ) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"config key {key!r}: the output folder {str(p)!r} is not writable")
    return p
