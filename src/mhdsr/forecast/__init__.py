"""Stage: the neural-operator forecast of the lo-grid evolution (``mhdsr forecast``;
docs/design.md "Forecast stage").

:mod:`~mhdsr.forecast.config` (typed schemas), :mod:`~mhdsr.forecast.loss` (one-step and
rolled-out losses, autoregressive rollout), :mod:`~mhdsr.forecast.task` (the task that the
shared loop :func:`mhdsr.runtime.loop.fit` trains), :mod:`~mhdsr.forecast.rollout` (rollouts to
HDF5), :mod:`~mhdsr.forecast.cli`. The model is :mod:`mhdsr.model.fno`; window shards come from
:mod:`mhdsr.shard_builder.windows`, the chain's super-resolution from ``mhdsr sample`` and the
scores from ``mhdsr eval`` (:mod:`mhdsr.eval.forecast`).
"""
