"""Small file helpers: atomic writes (temporary name in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import fcntl
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


def write_failed(path: str | Path, e: Exception, what: str = "output") -> Exception:
    """The :class:`~mhdsr.errors.OutputWriteError` to raise when writing ``path`` failed with
    ``e``: it names the file and says in words why (a bare ``[Errno 28]`` names neither).
    ``e`` may also be an HDF5 error (h5py raises RuntimeError with ``errno = N`` in the text)."""
    import errno
    import re

    from mhdsr.errors import OutputWriteError

    code = getattr(e, "errno", None)
    if code is None:
        m = re.search(r"errno = (\d+)", str(e))
        code = int(m.group(1)) if m else None
    why = {
        errno.ENOSPC: "no space left on the device (disk full)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large (file size limit)",
        errno.EROFS: "read-only file system",
        errno.EIO: "I/O error",
    }.get(code or -1, getattr(e, "strerror", None) or str(e).strip().splitlines()[0][:200])
    return OutputWriteError(
        f"{path}: cannot write the {what}: {why}; nothing was kept (the partial file was removed)"
    )


def preallocate(f: Any, size: int) -> None:
    """Reserve ``size`` bytes for the open file ``f`` (``os.posix_fallocate``), so that a disk
    too small fails at once with ENOSPC instead of part-way (or, for a memory map onto a sparse
    file, with SIGBUS). File systems that cannot preallocate are left to fail on write."""
    import errno

    try:
        os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    except AttributeError:  # pragma: no cover - no posix_fallocate on this platform
        pass


def staging_dir(final: str | Path) -> Path:
    """A fresh name ``.<final>.tmp-<host>-<pid>`` beside ``final`` to fill a folder in, then
    :func:`publish_dir` it: a failure part-way (disk full) never leaves a half-written
    ``final``. Staging folders of dead processes on this host are removed here; this one is
    removed at exit if it was not published (nothing is created until the caller makes it)."""
    import atexit
    import shutil
    import socket

    final = Path(final)
    host = socket.gethostname()
    if final.parent.is_dir():
        for p in final.parent.glob(f".{final.name}.*-{host}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(p, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{host}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def publish_dir(tmp: str | Path, final: str | Path) -> Path:
    """Replace the folder ``final`` by the complete folder ``tmp`` (two renames; the previous
    ``final`` is removed after the new one is in place). Returns ``final``."""
    import shutil
    import socket

    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".{final.name}.old-{socket.gethostname()}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block finishes without error.

    On an exception the temporary file is removed and ``path`` is left untouched, so readers
    never see a half-written file. A full disk, quota, file-size limit, read-only or I/O error
    becomes :class:`~mhdsr.errors.OutputWriteError` naming ``path`` (:func:`write_failed`).
    """
    import errno

    from mhdsr.errors import OutputWriteError

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as e:
        space = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)
        if isinstance(e, OutputWriteError) or e.errno not in space:
            raise
        raise write_failed(final, e) from None
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


def path_inside(
    root: str | Path, name: str, what: str, error: type[Exception] = ValueError
) -> Path:
    """``root / name`` for a file name read from a file (a manifest, a pointer file, a record),
    refusing every name that would leave ``root``.

    Refused: an empty name, an absolute path, a ``..`` component, and a path whose resolved
    target (symbolic links followed) lies outside the resolved ``root``. The result is the
    resolved path (it may not exist yet).

    Args:
        root: the folder the name must stay in.
        name: the name as read (e.g. a manifest's shard ``name``).
        what: what the name is, for the message (e.g. ``"manifest key 'splits.train.shards[0].name'"``).
        error: the exception type to raise.

    Raises:
        error: the name escapes ``root`` (the message names ``what``, the name and ``root``).
    """
    base = Path(root).resolve()
    if not isinstance(name, str) or not name:
        raise error(f"{what}: expected a file name inside {base}, got {name!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise error(
            f"{what}: {name!r} leaves the folder {base} (absolute paths and '..' are refused)"
        )
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise error(
            f"{what}: {name!r} resolves to {target}, outside the folder {base} (a symbolic link "
            "out of the folder is refused)"
        )
    return target


def check_output_dir(path: str | Path, key: str) -> Path:
    """Check, without creating anything, that the output folder ``path`` (config key ``key``)
    exists as a writable folder or can be created (its nearest existing ancestor is a writable
    folder). Cheap: for checks before slow imports (torch, DeepSpeed).

    Returns:
        The folder as a Path.

    Raises:
        ConfigError: a file is in the way, or the folder / its nearest existing ancestor is not
            writable (names ``key`` and the path).
    """
    from mhdsr.errors import ConfigError

    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating the folder would fail
            raise ConfigError(f"config key {key!r}: {str(probe)!r} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"config key {key!r}: cannot create the output folder {str(p)!r} "
            f"({str(probe)!r} is a file, not a folder)"
        )
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config key {key!r}: the output folder {str(p)!r} is not writable "
            f"({str(probe)!r} does not allow writing)"
        )
    return p


@contextlib.contextmanager
def folder_lock(
    path: str | Path, busy: str, error: type[Exception] = RuntimeError
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` for the block; the file is removed
    when the block is left (however it is left), so a finished job leaves no lock behind.

    Another process that opened the file before it was removed could otherwise lock the
    unlinked file while a third one locks a new file of the same name; so after locking, the
    lock is kept only if ``path`` still names the locked file. File systems without ``flock``
    (some NFS mounts) run without the lock, with a warning naming the file.

    Args:
        path: the lock file (created if missing).
        busy: the message of the error raised when another process holds the lock.
        error: the exception type raised then.

    Raises:
        error: another process holds the lock (message ``busy``).
    """
    import fcntl

    p = Path(path)
    with open(p, "a") as f:
        locked = False
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise error(busy) from None
        except OSError as e:  # pragma: no cover - no flock on this file system
            import warnings

            warnings.warn(
                f"{p}: this file system does not support flock ({e}); running without the lock "
                "(nothing stops a second process on the same folder)",
                stacklevel=3,
            )
        if locked:
            st = os.fstat(f.fileno())
            try:
                now = os.stat(p)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise error(busy)  # the holder finished and removed it meanwhile: retry
        try:
            yield
        finally:
            if locked:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


@contextlib.contextmanager
def sim_lock(path: Path) -> Any:
    """Hold an exclusive ``flock`` on ``.<file>.lock`` next to a sim's output while writing it;
    yields False (without waiting) when another live process holds it. The lock dies with its
    process, so a killed task never leaves a sim locked."""
    lock = path.parent / f".{path.name}.lock"
    with lock.open("a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
