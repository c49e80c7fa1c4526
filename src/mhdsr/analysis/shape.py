"""Level-free spectral shape error and the leave-one-out realization floor (docs/design.md,
"Metrics").

Level-free shape error: each spectrum divided by its own transition-band power. For spectra
``E(k)`` on the hi grid (``k = 1 .. N_hi/2``, units of ``2 pi / L``) and the bands of
:func:`~mhdsr.analysis.spectra.band_edges`:

    P^trans = sum_{k in transition} E(k)
    shape_err = mean_{k in generated} |log10( (E_m(k) / P_m^trans) / (E_r(k) / P_r^trans) )|

in dex. A run that is only less (or more) energetic, ``E_m = c E_r``, has shape error 0 while
its plain generated-band error (:func:`~mhdsr.analysis.spectra.spectral_error`) is
``|log10 c|``.

The realization floor (:func:`leave_one_out`) is what a real hi-grid run itself scores: each
seed's mean spectrum against the mean of the other seeds' mean spectra.
"""

from __future__ import annotations

import numpy as np

from mhdsr.analysis.spectra import DEFAULT_FLOOR, band_edges, spectral_error


def transition_power(e: np.ndarray, k: np.ndarray, n_lo: int, n_hi: int) -> np.ndarray:
    """Total power in the transition band ``[n_lo/4, n_lo/2)``: ``sum_{k in band} E(k)``.

    Args:
        e: float ``(..., K)`` spectra at wavenumbers ``k``.
        k: ``(K,)`` wavenumbers of the last axis.
        n_lo, n_hi: grid sizes that set the bands (:func:`band_edges`).

    Returns:
        float64 ``(...)``, in the units of ``E``.

    Raises:
        ValueError: ``k`` does not match the last axis, or no ``k`` lies in the transition band.
    """
    k = np.asarray(k)
    e = np.asarray(e, dtype=np.float64)
    if k.ndim != 1 or k.size != e.shape[-1]:
        raise ValueError(f"k {k.shape} must be 1-D and match the last axis of E {e.shape}")
    m = band_edges(n_lo, n_hi)["transition"].mask(k)
    if not m.any():
        raise ValueError(f"no wavenumber of k lies in the transition band (n_lo={n_lo})")
    return e[..., m].sum(axis=-1)


def shape_spectrum(
    e: np.ndarray, k: np.ndarray, n_lo: int, n_hi: int, *, floor: float = DEFAULT_FLOOR
) -> np.ndarray:
    """``E(k) / P^trans``: a spectrum divided by its own transition-band power (dimensionless).

    A zero transition power is raised to ``floor`` first (a field without power there, e.g. a
    uniform density, keeps a finite, vanishing shape).

    Args:
        e: float ``(..., K)`` spectra at wavenumbers ``k``.
        k: ``(K,)`` wavenumbers.
        n_lo, n_hi: grid sizes that set the bands.
        floor: lower bound of ``P^trans``.

    Returns:
        float64 ``(..., K)``.
    """
    p = np.maximum(transition_power(e, k, n_lo, n_hi), floor)
    return np.asarray(e, dtype=np.float64) / p[..., None]


def shape_error(
    e_model: np.ndarray,
    e_ref: np.ndarray,
    k: np.ndarray,
    n_lo: int,
    n_hi: int,
    *,
    floor: float = DEFAULT_FLOOR,
) -> np.ndarray:
    """Level-free generated-band shape error in dex (module docstring for the formula).

    Args:
        e_model: float ``(..., K)`` spectrum (e.g. a curve's mean spectrum, ``(C, K)``).
        e_ref: float ``(..., K)`` reference spectrum (broadcastable with ``e_model``).
        k: ``(K,)`` wavenumbers, which must reach the transition and generated bands.
        n_lo, n_hi: grid sizes that set the bands.
        floor: lower bound of the transition powers and of the normalized spectra
            (as in :func:`~mhdsr.analysis.spectra.spectral_error`).

    Returns:
        float64 ``(...)``; 0 for ``e_model = c * e_ref`` with any ``c > 0``.

    Raises:
        ValueError: ``k`` does not match the spectra or misses the transition or generated band.
    """
    band = band_edges(n_lo, n_hi)["generated"]
    sm = shape_spectrum(e_model, k, n_lo, n_hi, floor=floor)
    sr = shape_spectrum(e_ref, k, n_lo, n_hi, floor=floor)
    return spectral_error(sm, sr, k, band, floor=floor)


def generated_error(
    e_model: np.ndarray, e_ref: np.ndarray, k: np.ndarray, n_lo: int, n_hi: int
) -> np.ndarray:
    """The plain (level-dependent) generated-band error ``mean_{k in generated} |log10 E_m /
    E_r|`` in dex: :func:`~mhdsr.analysis.spectra.spectral_error` on the generated band;
    shapes as in :func:`shape_error`."""
    return spectral_error(e_model, e_ref, k, band_edges(n_lo, n_hi)["generated"])


def leave_one_out(
    per_seed: np.ndarray, k: np.ndarray, n_lo: int, n_hi: int
) -> dict[str, np.ndarray]:
    """Realization floor: each seed's mean spectrum against the mean of the OTHER seeds.

    Args:
        per_seed: float ``(S, ..., K)`` mean spectrum of each of ``S >= 2`` seeds (e.g.
            ``(S, C, K)``), at wavenumbers ``k``.
        k: ``(K,)`` wavenumbers.
        n_lo, n_hi: grid sizes that set the bands.

    Returns:
        ``{"shape": (S, ...), "plain": (S, ...)}`` float64: :func:`shape_error` and
        :func:`generated_error` of seed ``s`` against ``mean_{s' != s} per_seed[s']`` (each
        seed weighted equally). The floor is their mean over seeds (axis 0).

    Raises:
        ValueError: fewer than 2 seeds.
    """
    e = np.asarray(per_seed, dtype=np.float64)
    s = e.shape[0] if e.ndim >= 2 else 0
    if s < 2:
        raise ValueError(f"the leave-one-out floor needs >= 2 seeds, got {s}")
    others = np.stack([np.delete(e, i, axis=0).mean(axis=0) for i in range(s)])
    return {
        "shape": shape_error(e, others, k, n_lo, n_hi),
        "plain": generated_error(e, others, k, n_lo, n_hi),
    }
