"""What a metric function sees: one curve's fields at one snapshot, and that snapshot's target.

:class:`Fields` wraps an ensemble ``(M, C, N, N)`` (physical units; ``M = 1`` for deterministic
curves, the truth and the input) and computes derived quantities once, on first use, so that
every metric of the snapshot shares them: the normalized ``rfft2`` coefficients (one FFT per
field; spectra, cross spectra and coherence all come from them), the ensemble mean and its
coefficients (by linearity, no extra FFT), and the sorted samples of the PDF variables.

:class:`Target` is what predictions are compared with: the truth's :class:`Fields` (sims with
pixel truth) or, for held-out sims, the reference split's mean spectrum and pooled PDF samples
(:class:`mhdsr.eval.reference.Reference`).

PDF variables (docs/design.md, "Sample-quality metrics beyond spectra"): ``"value"`` of jz is
``jz / rms(jz)`` (each field by its own rms: the shape of the PDF; amplitudes are scored by the
spectra); ``"dx1"`` .. ``"dy4"`` of velx, vely, velz are the increments
``v(x + l) - v(x)`` at ``l = 1, 2, 4`` cells along x (last axis) or y, in physical units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from mhdsr.analysis.pdfs import AXES, LAGS, flatness, increments, normalized_by_rms
from mhdsr.analysis.spectra import rfft_coefficients, shell_power

#: Channels whose increments are scored, and the increment variables (``d<axis><lag>``).
INCREMENT_CHANNELS: tuple[str, ...] = ("velx", "vely", "velz")
INCREMENT_VARS: tuple[str, ...] = tuple(f"d{a}{lag}" for a in AXES for lag in LAGS)
#: Channels whose value PDF (``field / rms(field)``) is scored.
VALUE_CHANNELS: tuple[str, ...] = ("jz",)


def pdf_values(x: np.ndarray, var: str) -> np.ndarray:
    """The PDF variable ``var`` of fields ``x`` ``(..., N, N)`` of one channel, float64.

    ``"value"``: ``x / rms(x)`` per field; ``"d<a><l>"``: increments at lag ``l`` along axis
    ``a`` (``x`` or ``y``), periodic.

    Raises:
        ValueError: unknown ``var``.
    """
    if var == "value":
        return normalized_by_rms(x)
    if len(var) >= 3 and var[0] == "d" and var[1] in AXES and var[2:].isdigit():
        return increments(x, int(var[2:]), AXES[var[1]])
    raise ValueError(f"unknown PDF variable {var!r} (value, {', '.join(INCREMENT_VARS)})")


@dataclass(frozen=True)
class PdfSample:
    """A pooled sample of one PDF variable: ``values`` sorted ascending (float32), their std
    (ddof=0, float64) and flatness ``S4 / S2**2`` (:func:`mhdsr.analysis.pdfs.flatness`)."""

    values: np.ndarray
    std: float
    flatness: float


def pdf_sample(values: np.ndarray) -> PdfSample:
    """:class:`PdfSample` of any array of values (flattened)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return PdfSample(np.sort(v.astype(np.float32)), float(np.std(v)), float(flatness(v)))


class Fields:
    """One curve's fields at one snapshot, with lazily computed, cached derived quantities.

    Args:
        x: ``(M, C, N, N)`` float32 ensemble (``M >= 1``), physical units.
        channels: the ``C`` channel names.
        n_lo, n_hi: lo and hi grid sizes of the evaluation (spectral bands); ``N`` is either.
    """

    def __init__(self, x: np.ndarray, channels: Sequence[str], *, n_lo: int, n_hi: int) -> None:
        if x.ndim != 4 or x.shape[1] != len(channels) or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Fields need (M, C, N, N) with C = {len(channels)}, got {x.shape}")
        self.x = x
        self.channels = tuple(channels)
        self.n_lo, self.n_hi = n_lo, n_hi
        self._memo: dict[Any, Any] = {}
        self._pdf: dict[tuple[str, str], PdfSample] = {}

    @property
    def n_members(self) -> int:
        """Ensemble size ``M``."""
        return self.x.shape[0]

    @property
    def n(self) -> int:
        """Grid size ``N``."""
        return self.x.shape[-1]

    def index(self, channel: str) -> int | None:
        """Position of ``channel`` in :attr:`channels`, ``None`` if absent."""
        return self.channels.index(channel) if channel in self.channels else None

    @cached_property
    def coef(self) -> np.ndarray:
        """``rfft2(x) / N**2``, complex128 ``(M, C, N, N // 2 + 1)``."""
        return rfft_coefficients(self.x)

    @cached_property
    def power(self) -> np.ndarray:
        """Shell spectra of every member, float64 ``(M, C, S)``, all shells ``k = 0 ..``."""
        return shell_power(self.coef)

    @cached_property
    def mean(self) -> np.ndarray:
        """Ensemble mean, float64 ``(C, N, N)``."""
        return self.x.mean(axis=0, dtype=np.float64)

    @cached_property
    def coef_mean(self) -> np.ndarray:
        """Coefficients of the ensemble mean ``(C, N, N // 2 + 1)`` (mean of :attr:`coef`)."""
        return self.coef.mean(axis=0)

    @cached_property
    def power_of_mean(self) -> np.ndarray:
        """Shell spectrum of the ensemble mean, ``(C, S)``."""
        return shell_power(self.coef_mean)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` for this snapshot (shared by metrics: e.g. the three
        band coherences come from one cross spectrum)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def pdf(self, var: str, channel: str) -> PdfSample:
        """Pooled (over members and the grid) sample of a PDF variable of one channel.

        Raises:
            KeyError: ``channel`` is absent.
        """
        key = (var, channel)
        if key not in self._pdf:
            c = self.index(channel)
            if c is None:
                raise KeyError(channel)
            self._pdf[key] = pdf_sample(pdf_values(self.x[:, c], var))
        return self._pdf[key]


@dataclass
class Target:
    """The comparison of one snapshot.

    Attributes:
        fields: the truth ``(1, C, N, N)`` (sims with pixel truth), else ``None``.
        spectrum: ``(C, S)`` all-shell target spectrum: the truth's, or the reference split's
            mean hi spectrum (held-out sims).
        pdfs: pooled reference samples ``(var, channel) -> PdfSample`` (held-out sims); for
            sims with truth the samples come from ``fields``.
    """

    fields: Fields | None
    spectrum: np.ndarray
    pdfs: Mapping[tuple[str, str], PdfSample] = field(default_factory=dict)

    @classmethod
    def of_truth(cls, truth: Fields) -> Target:
        """The target of a snapshot with pixel truth."""
        return cls(truth, truth.power[0])

    def pdf(self, var: str, channel: str) -> PdfSample | None:
        """The target's sample of a PDF variable, ``None`` if unavailable."""
        if self.fields is not None:
            return self.fields.pdf(var, channel) if channel in self.fields.channels else None
        return self.pdfs.get((var, channel))
