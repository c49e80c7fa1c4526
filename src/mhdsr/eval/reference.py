"""Statistics of whole hi splits: the reference of held-out sims and the train spectra of the
``spectral-noise`` baseline. One streaming pass over a split each, one snapshot in memory.

- :func:`reference_stats` (the ``reference_split``, default test): mean hi spectrum (the target
  of held-out sims, which have no pixel truth), mean avgpool2(hi) spectrum and value samples
  (the domain gap), pooled PDF samples of the scored variables (held-out PDF metrics), and the
  hi fields scored like the truth (their flatness and physics residuals: the floors of the
  held-out sims).
- :func:`train_spectra` (the ``train_split``): mean spectra of hi and of the spline of
  avgpool2(hi); their clipped difference is the spectrum ``spectral-noise`` adds.

Value samples are an even pixel stride over all snapshots (``cap`` values per variable at most),
so memory stays bounded at full scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mhdsr.analysis.pdfs import flatness
from mhdsr.analysis.spectra import power_spectrum
from mhdsr.eval.curve import Curve
from mhdsr.eval.fields import (
    INCREMENT_CHANNELS,
    INCREMENT_VARS,
    VALUE_CHANNELS,
    Fields,
    PdfSample,
    Target,
)
from mhdsr.eval.inputs import EvalInputError, ShardTruth
from mhdsr.eval.planning import orbits
from mhdsr.method.grid import avgpool2_np, upsample_np

#: PDF variables held by a :class:`Reference`: (variable, channel).
PDF_KEYS: tuple[tuple[str, str], ...] = tuple(("value", c) for c in VALUE_CHANNELS) + tuple(
    (v, c) for c in INCREMENT_CHANNELS for v in INCREMENT_VARS
)


def value_stride(total: int, cap: int) -> int:
    """Pixel stride so that at most about ``cap`` of ``total`` values are kept (>= 1)."""
    return max(1, -(-total // cap))


def take_values(values: np.ndarray, stride: int, offset: int) -> np.ndarray:
    """``values.ravel()[offset % stride :: stride]`` as float32 (an even subsample)."""
    return np.asarray(values, np.float32).ravel()[offset % stride :: stride].copy()


@dataclass
class Reference:
    """Statistics of a hi split for the given channels (module docstring).

    Attributes:
        split: the split; ``n_snapshots``: its sample count; ``times``: their times.
        hi_power: ``(C, S)`` mean all-shell hi spectrum; ``hi_spectrum``: ``(C, K_hi)`` its
            reported range ``k = 1 .. N/2``; ``lo_spectrum``: ``(C, K_lo)`` of avgpool2(hi).
        lo_values: per channel, strided value samples of avgpool2(hi) (domain gap).
        pdfs: ``(variable, channel) -> PdfSample`` pooled over the PDF snapshots (an even
            subsample of their sorted values).
        curve: the hi fields of the PDF snapshots scored like the truth (registry metrics of
            kind ``truth`` that need no target: flatness, physics residuals; histograms).
        omega: angular frequency of the box (orbits).
    """

    split: str
    n_snapshots: int
    times: list[float]
    hi_power: np.ndarray
    hi_spectrum: np.ndarray
    lo_spectrum: np.ndarray
    lo_values: list[list[np.ndarray]]
    pdfs: dict[tuple[str, str], PdfSample] = field(default_factory=dict)
    curve: Curve | None = None
    omega: float = 1.0


def _split_names(truth: ShardTruth) -> list[str]:
    return [s for s, r in truth.manifest["splits"].items() if r.get("source") == "hi"]


def check_reference_split(truth: ShardTruth, split: str) -> None:
    """Raise EvalInputError unless ``split`` is a hi split of the shards (cheap; no data read)."""
    if not truth.has_split(split):
        raise EvalInputError(
            f"shards {truth.root}: no hi split {split!r} for the held-out reference (set "
            f"reference_split to one of {_split_names(truth)})"
        )


def reference_stats(
    truth: ShardTruth,
    split: str,
    channels: Sequence[str],
    cap: int,
    *,
    omega: float = 1.0,
    pdf_snapshots: int = 256,
) -> Reference:
    """One pass over a hi split (module docstring).

    Args:
        truth: the shard folder.
        split: a hi split.
        channels: the channels of the sample files.
        cap: at most about this many values per channel / PDF variable are kept.
        omega: the box's angular frequency (orbits).
        pdf_snapshots: at most this many snapshots (evenly spaced) enter the PDFs, flatness
            and physics residuals; the spectra and the domain gap use every snapshot.

    Raises:
        EvalInputError: the split is missing or empty, or lacks a channel.
    """
    check_reference_split(truth, split)
    chans = list(channels)
    idx = [truth.channels.index(c) for c in chans]
    n_total = int(truth.manifest["splits"][split]["samples"])
    h, w = truth.hi_shape[-2:]
    every = value_stride(n_total, pdf_snapshots)
    lo_stride = value_stride(n_total * (h // 2) * (w // 2), cap)
    hi_stride = value_stride(-(-n_total // every) * h * w, cap)
    keys = [k for k in PDF_KEYS if k[1] in chans]
    cur = Curve("reference", "truth")
    cur.plan(chans, has_pixels=False)
    hi_sum = lo_sum = None
    values: list[list[np.ndarray]] = [[] for _ in chans]
    pdf_parts: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in keys}
    times: list[float] = []
    n = 0
    for key, arr in truth.iter_hi(split):
        x = arr[idx]
        lo = avgpool2_np(x)
        f = Fields(x[None], chans, n_lo=h // 2, n_hi=h)
        eh, el = f.power[0], power_spectrum(lo)
        hi_sum = eh if hi_sum is None else hi_sum + eh
        lo_sum = el if lo_sum is None else lo_sum + el
        for c in range(len(chans)):
            values[c].append(take_values(lo[c], lo_stride, n))
        rec = truth.record(split, key)
        t = rec.get("time")
        if t is not None:
            times.append(float(t))
        if n % every == 0:
            when = float(t) if t is not None else float("nan")
            cur.add(
                f,
                Target(None, eh),
                sim=str(rec.get("sim", "")),
                snapshot=int(rec.get("snapshot", -1)),
                time=when,
                orbit=orbits([when], omega)[0],
            )
            for var, ch in keys:
                pdf_parts[(var, ch)].append(take_values(f.pdf(var, ch).values, hi_stride, n))
        n += 1
    if n == 0:
        raise EvalInputError(f"shards {truth.root}: split {split!r} holds no hi field")
    pdfs = {}
    for k, parts in pdf_parts.items():
        v = np.sort(np.concatenate(parts))
        pdfs[k] = PdfSample(v, float(np.std(v, dtype=np.float64)), float(flatness(v)))
    hi_power = hi_sum / n
    return Reference(
        split=split,
        n_snapshots=n,
        times=times,
        hi_power=hi_power,
        hi_spectrum=hi_power[:, 1 : h // 2 + 1],
        lo_spectrum=(lo_sum / n)[:, 1 : (h // 2) // 2 + 1],
        lo_values=values,
        pdfs=pdfs,
        curve=cur,
        omega=omega,
    )


@dataclass
class TrainSpectra:
    """Mean all-shell spectra over (a strided subset of) a hi split: ``hi`` ``(C, S)`` and
    ``spline`` ``(C, S)`` of the spline of the block mean of hi, from ``n`` snapshots."""

    split: str
    n: int
    hi: np.ndarray
    spline: np.ndarray

    @property
    def noise_spectrum(self) -> np.ndarray:
        """``max(E_train - E_spline, 0)`` ``(C, S)``: what ``spectral-noise`` adds."""
        return np.maximum(self.hi - self.spline, 0.0)


def train_spectra(
    truth: ShardTruth, split: str, channels: Sequence[str], factor: int, max_snapshots: int
) -> TrainSpectra:
    """Mean spectra of hi and of ``spline(avgpool2(hi))`` over a hi split.

    At most ``max_snapshots`` samples are read, evenly spaced over the sorted keys (the full
    train split at full scale is ~10^5 snapshots; a few hundred pin the mean spectrum well).

    Raises:
        EvalInputError: the split is missing or empty.
    """
    if not truth.has_split(split):
        raise EvalInputError(f"shards {truth.root}: no hi split {split!r} (train_split)")
    idx = [truth.channels.index(c) for c in channels]
    keys = [k for k, m in sorted(truth.index(split).items()) if "hi.npy" in m]
    if not keys:
        raise EvalInputError(f"shards {truth.root}: split {split!r} holds no hi field")
    step = value_stride(len(keys), max_snapshots)
    hi_sum = sp_sum = None
    n = 0
    for key in keys[::step]:
        x = truth.hi(split, key)[idx].astype(np.float64)
        lo = avgpool2_np(x.astype(np.float32)) if factor == 2 else None
        if lo is None:
            raise EvalInputError(f"spectral-noise needs a 2x grid ratio, got {factor}")
        u = upsample_np(lo, factor, "spline").astype(np.float64)
        eh, eu = power_spectrum(x), power_spectrum(u)
        hi_sum = eh if hi_sum is None else hi_sum + eh
        sp_sum = eu if sp_sum is None else sp_sum + eu
        n += 1
    return TrainSpectra(split, n, hi_sum / n, sp_sum / n)
