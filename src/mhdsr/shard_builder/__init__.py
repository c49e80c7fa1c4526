"""Shard builder: AthenaK runs -> webdataset tar shards + ``manifest.json`` (design.md "Formats"):
super-resolution samples, or with ``task: forecast`` windows of evenly spaced snapshots
(docs/design.md "Forecast stage").

* :mod:`~mhdsr.shard_builder.config`: the typed build config;
* :mod:`~mhdsr.shard_builder.plan`: run discovery, checks, seed split, shuffle, shard cutting;
* :mod:`~mhdsr.shard_builder.windows`: the plan of forecast window shards (``seq.npy``);
* :mod:`~mhdsr.shard_builder.worker`: writes one shard (encode, tar, sha256, statistics);
* :mod:`~mhdsr.shard_builder.pool`: a worker pool that can always be stopped (no hang, no orphan);
* :mod:`~mhdsr.shard_builder.build`: orchestration, resume, parallel workers, manifest;
* :mod:`~mhdsr.shard_builder.stats`: mergeable float64 per-channel statistics;
* :mod:`~mhdsr.dataset.manifest`: reading the manifest, shard paths, normalization;
* :mod:`~mhdsr.shard_builder.inspect`: summary and byte-level verification;
* :mod:`~mhdsr.shard_builder.cli`: ``mhdsr shard {build,inspect}``.

Readers (trainers, sampler, eval) need only :mod:`mhdsr.dataset`.
"""

from mhdsr.dataset.manifest import (
    manifest_sha256,
    normalization,
    read_manifest,
    shard_paths,
)

__all__ = ["manifest_sha256", "normalization", "read_manifest", "shard_paths"]
