"""Training: webdataset stream -> DeepSpeed engine (ZeRO, bf16/fp32) + fp32 EMA, resumable.

Modules: :mod:`config` (typed schema), :mod:`data` (shards -> batches), :mod:`distributed`
(rank/world/device from torchrun or SLURM), :mod:`engine` (DeepSpeed config + optimizer),
:mod:`ema`, :mod:`checkpoint` (save/resume/export), :mod:`monitor` (TensorBoard), :mod:`loop`.
"""
