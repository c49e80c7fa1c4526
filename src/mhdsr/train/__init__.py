"""Stage: super-resolution training (``mhdsr train``).

:mod:`~mhdsr.train.config` (typed schema), :mod:`~mhdsr.train.task` (the SR task that the shared
loop :func:`mhdsr.runtime.loop.fit` trains: data stream, loss, validation, export fields),
:mod:`~mhdsr.train.panels` (TensorBoard panels), :mod:`~mhdsr.train.cli`.
"""
