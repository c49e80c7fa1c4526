"""Evaluation of super-resolved fields against the truth (DESIGN.md, "Metrics").

The maths lives in small pure numpy modules (float64 accumulation, no torch, no I/O):

- :mod:`mhdsr.eval.spectra` -- shell-summed power spectra, spectral bands, per-band log errors.
- :mod:`mhdsr.eval.metrics` -- RMSE / NRMSE, fair ensemble CRPS, spread/skill, histogram distances.
- :mod:`mhdsr.eval.physics_checks` -- div B and jz consistency residuals (centred differences).

Import the submodules directly; this package module imports nothing so that it stays light.
"""
