"""Exception types. Every error a user can cause derives from :class:`MhdsrError`; the CLI
prints its message (which names the file / key / field at fault) and exits with status 2."""


class MhdsrError(Exception):
    """Base class of all user-facing errors (bad input, bad config, missing files)."""


class ConfigError(MhdsrError, ValueError):
    """A configuration file or ``key=value`` override is invalid (the message names the key)."""


class AthenaKFormatError(MhdsrError, ValueError):
    """An AthenaK ``.bin`` file or run folder is malformed or unsupported (names the path)."""


class ShardError(MhdsrError, ValueError):
    """A shard, manifest or shard build input is invalid (names the shard / key)."""


class CheckpointError(MhdsrError, ValueError):
    """A checkpoint or exported weights file is missing, corrupt or incompatible."""


class PeerFailedError(MhdsrError, RuntimeError):
    """Another rank of a multi-process job failed, and this one stopped waiting for it (the
    message names the failed rank and its error)."""


class NonFiniteError(MhdsrError, ValueError):
    """An output would hold NaN/inf values (exported weights, a sample file); it is not written,
    and the message says where the values are."""


class OutputWriteError(MhdsrError, OSError):
    """An output could not be written (disk full, quota, file size limit, I/O error); the
    message names the file and the reason, and the partial file has been removed."""
