"""Evaluation of super-resolved fields against the truth (DESIGN.md, "Metrics").

The maths lives in small pure numpy modules (float64 accumulation, no torch, no I/O):

- :mod:`mhdsr.eval.spectra` -- shell-summed power spectra, spectral bands, per-band log errors.
- :mod:`mhdsr.eval.metrics` -- RMSE / NRMSE, fair ensemble CRPS, spread/skill, histogram distances.
- :mod:`mhdsr.eval.physics_checks` -- div B and jz consistency residuals (centred differences).

``mhdsr eval`` (reads files, writes the report) is built on them:

- :mod:`mhdsr.eval.config` -- the typed config; :mod:`mhdsr.eval.cli` -- the subcommand.
- :mod:`mhdsr.eval.inputs` -- inference HDF5 headers, method labels, truth by key from shards.
- :mod:`mhdsr.eval.evaluate` -- per-sim scores of methods, baselines, truth and input.
- :mod:`mhdsr.eval.run` -- the pipeline: metrics.json, figures, report.md (atomic writes).
- :mod:`mhdsr.eval.report` / :mod:`mhdsr.eval.figures` -- JSON hygiene, tables, markdown; PNGs.

Import the submodules directly; this package module imports nothing so that it stays light.
"""
