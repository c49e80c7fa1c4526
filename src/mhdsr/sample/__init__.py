"""Sampling: time grids, ODE/SDE samplers and reproducible per-sample noise (docs/design.md, "The
method"), plus bulk inference to HDF5.

* :mod:`mhdsr.method.timegrid` - ``time_grid(n_steps, kind)``: linear / quadratic / EDM grids.
* :mod:`mhdsr.method.samplers` - ``euler``, ``heun``, ``euler_maruyama``; ``SAMPLERS``,
  ``get_sampler(name)``, ``sample(name, model, u, ...)``, NFE counting.
* :mod:`mhdsr.method.noise` - ``generator_for(seed, *key)``, ``PerSampleNoise``: noise that does
  not depend on batch size, order or world size.
* :mod:`mhdsr.sample.bulk` - ``run_sample(cfg)``, ``list_work``, ``status``: ``mhdsr sample``,
  one HDF5 file per sim (:mod:`~mhdsr.sample.h5out`), inputs from shards, AthenaK runs or
  forecast rollouts (the chain; :mod:`~mhdsr.sample.inputs`), exported model
  (:mod:`~mhdsr.model.inference`), config schema (:mod:`~mhdsr.sample.config`), command line
  with ``--status`` (:mod:`~mhdsr.sample.cli`).

This package ``__init__`` imports nothing, so ``import mhdsr.sample.<module>`` stays cheap.
"""
