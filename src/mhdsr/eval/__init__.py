"""Evaluation of super-resolved fields and of forecasts against the truth and baselines
(docs/design.md, "Metrics", "Baselines", "Sample-quality metrics beyond spectra", "Forecast stage").

The maths lives in the pure numpy layer :mod:`mhdsr.analysis` (spectra and coherence, scores,
PDFs, physics residuals, Gaussian random fields, energies); the grid operators (avgpool2, the
periodic bilinear / bicubic / spline Up) in :mod:`mhdsr.method.grid`. ``mhdsr eval`` is
built on them, one concern per module:

- :mod:`~mhdsr.eval.config` -- the typed config; :mod:`~mhdsr.eval.cli` -- the subcommand.
- :mod:`~mhdsr.eval.inputs` -- inference HDF5 headers, method labels, truth by key from shards.
- :mod:`~mhdsr.eval.planning` -- files -> one job per sim, panel plan, baseline inputs, orbits.
- :mod:`~mhdsr.eval.registry` -- the metric registry; :mod:`~mhdsr.eval.metric_defs` -- the
  built-in metrics (one function + one registration each).
- :mod:`~mhdsr.eval.baselines` -- the baseline registry (bilinear, bicubic, spline,
  spectral-noise, noise); the grid operators are
  :mod:`mhdsr.method.grid`'s (``upsample_np``, ``avgpool2_np``).
- :mod:`~mhdsr.eval.fields` -- one snapshot's fields with cached FFTs / PDF samples, its target.
- :mod:`~mhdsr.eval.reference` -- whole-split statistics (held-out reference, train spectra).
- :mod:`~mhdsr.eval.native_shape` -- held-out level-free shape error against every hi seed in
  their orbit window, and the leave-one-out realization floor.
- :mod:`~mhdsr.eval.scoring` -- per-snapshot rows of one sim (every curve, every metric).
- :mod:`~mhdsr.eval.pooling` -- rows -> reported values per sim / group, time series.
- :mod:`~mhdsr.eval.assemble` -- the metrics.json structure; :mod:`~mhdsr.eval.reading` -- the
  automatic reading of the numbers.
- :mod:`~mhdsr.eval.report` -- JSON hygiene, tables, summary.md and report.md;
  every figure: :mod:`mhdsr.plots`.
- :mod:`~mhdsr.eval.forecast` -- forecast rollouts and the forecast -> super-resolve chain scored
  per lead time against persistence, linear extrapolation and bicubic baselines, through the same
  metric registry; goals; the energy cross-check against AthenaK's history file.
  :mod:`~mhdsr.eval.forecast_report` -- their metrics.json and lead-time table.
- :mod:`~mhdsr.eval.run` -- :func:`~mhdsr.eval.run.run_eval`, the pipeline (atomic writes); it
  sends rollout and chain files (found by their ``kind`` attribute) to the forecast modules.

Import the submodules directly; this package module imports nothing so that it stays light.
"""
