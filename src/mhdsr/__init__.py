"""mhdsr: flow-matching super-resolution of 2D MRI shearing-box MHD turbulence (AthenaK).

From a 128² snapshot of a shearing-box run, draw an ensemble of 256² snapshots (8 channels:
density, velx, vely, velz, Bx, By, Bz, jz) with a stochastic-interpolant flow, and judge it
against baselines with spectra, phases, ensemble scores and physics checks. A forecast stage
predicts the 128² evolution with a Fourier neural operator and super-resolves every step.

Pipeline (one subpackage per stage, one ``mhdsr`` command each; drawn in docs/architecture.md)::

    athenak (reader) -> shard_builder -> train -> sample -> eval
    shard_builder (task: forecast) -> forecast (train, rollout) -> sample -> eval (per lead)
    launch submits train, forecast train and sample to SLURM (submitit)

Shared layers under the stages: ``method`` (interpolant, loss, samplers, noise, symmetries),
``dataset`` (shard format, manifest, streams), ``model`` (UNet, FNO, export, inference),
``runtime`` (processes, DeepSpeed engine, EMA, checkpoints, the training loop) and ``analysis``
(pure numpy spectra, scores, PDFs, physics); a small foundation (``config``, ``channels``,
``errors``, ``io_utils``, ``plots``, ``command``, ``units``) under everything.
"""

__version__ = "0.1.0"
