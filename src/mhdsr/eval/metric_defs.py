"""The built-in metrics of ``mhdsr eval`` (docs/design.md, "Metrics" and "Sample-quality metrics
beyond spectra"), each one function plus one :func:`mhdsr.eval.registry.register` call.

The maths is in :mod:`mhdsr.analysis`; these functions only pick its inputs from a snapshot's
:class:`~mhdsr.eval.fields.Fields` (``pred``, ``(M, C, N, N)`` physical units) and
:class:`~mhdsr.eval.fields.Target`, and return one row: ``(C,)`` per channel (``nan`` for a
channel a metric does not cover) or a scalar per field. Rows are reduced over snapshots as each
registration says. Loaded by the registry on first use.
"""

from __future__ import annotations

import numpy as np

from mhdsr.analysis import scores as S
from mhdsr.analysis.energy import kinetic_energy, magnetic_energy, pearson
from mhdsr.analysis.pdfs import wasserstein1
from mhdsr.analysis.physics import divb_residual, jz_residual
from mhdsr.analysis.spectra import (
    band_coherence,
    band_edges,
    member_pair_coherence,
    shell_cross,
)
from mhdsr.eval.fields import (
    INCREMENT_CHANNELS,
    INCREMENT_VARS,
    VALUE_CHANNELS,
    Fields,
    Target,
)
from mhdsr.eval.registry import FORECAST, FORECAST_ENSEMBLE, PREDICTIONS, Metric, register

BANDS = ("resolved", "transition", "generated")
PHYSICS_CHANNELS = ("Bx", "By", "jz")


def _truth(target: Target) -> np.ndarray:
    assert target.fields is not None  # needs="pixels": only called with pixel truth
    return target.fields.x[0]


# ---- pixel errors ------------------------------------------------------------------------------


def _rmse(pred: Fields, target: Target) -> np.ndarray:
    return S.rmse(pred.x, _truth(target)[None]).mean(axis=0)


def _nrmse(pred: Fields, target: Target) -> np.ndarray:
    return S.nrmse(pred.x, _truth(target)[None]).mean(axis=0)


def _rmse_mean(pred: Fields, target: Target) -> np.ndarray:
    return S.rmse(pred.mean, _truth(target))


def _nrmse_mean(pred: Fields, target: Target) -> np.ndarray:
    return S.nrmse(pred.mean, _truth(target))


register(
    Metric(
        "rmse",
        "RMSE",
        "sqrt(mean over the grid of (pred - truth)^2) per snapshot and member; mean over "
        "members, then snapshots (physical units); forecasts: per initial state and lead, mean "
        "over initial states.",
        _rmse,
        kinds=PREDICTIONS | {FORECAST},
    )
)
register(
    Metric(
        "nrmse",
        "NRMSE",
        "RMSE / std(truth) of the same snapshot (dimensionless; 1 = as bad as predicting the "
        "truth's mean).",
        _nrmse,
        kinds=PREDICTIONS | {FORECAST},
    )
)
register(
    Metric(
        "rmse_ensemble_mean",
        "RMSE ens. mean",
        "RMSE of the member average (a deterministic curve is its own mean; lower than single "
        "members when they scatter around the truth).",
        _rmse_mean,
    )
)
register(
    Metric(
        "nrmse_ensemble_mean",
        "NRMSE ens. mean",
        "RMSE of the member average / std(truth), per snapshot, mean over snapshots.",
        _nrmse_mean,
        summary=True,
    )
)


# ---- ensemble scores ---------------------------------------------------------------------------


def _crps(pred: Fields, target: Target) -> np.ndarray:
    if pred.n_members == 1:  # a point forecast: its CRPS is its MAE (Gneiting & Raftery 2007)
        return np.mean(np.abs(pred.x[0].astype(np.float64) - _truth(target)), axis=(-2, -1))
    return S.crps_fair(pred.x, _truth(target), member_axis=0)


def _spread_skill(pred: Fields, target: Target) -> tuple[np.ndarray, np.ndarray]:
    return pred.memo("spread_skill", lambda: S.spread_skill(pred.x, _truth(target), 0)[:2])


def _spread(pred: Fields, target: Target) -> np.ndarray:
    return _spread_skill(pred, target)[0]


def _skill(pred: Fields, target: Target) -> np.ndarray:
    return _spread_skill(pred, target)[1]


def _spread_skill_pair(pred: Fields, target: Target) -> np.ndarray:
    spread, skill = _spread_skill(pred, target)
    return np.stack([np.sqrt(1.0 + 1.0 / pred.n_members) * spread, skill], axis=-1)


_ENS = dict(ensemble=True, min_members=2, table="ensemble", kinds=PREDICTIONS | {FORECAST_ENSEMBLE})
register(
    Metric(
        "crps",
        "CRPS",
        "fair CRPS mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 n (n-1)) per pixel, grid mean "
        "(Ferro 2014); 0 for a perfect ensemble, physical units. Forecasts: a deterministic "
        "forecast (one member) scores its MAE, the CRPS of a point forecast.",
        _crps,
        summary=True,
        **_ENS,
    )
)
register(
    Metric(
        "spread",
        "spread",
        "sqrt(mean over snapshots of the grid-mean member variance, ddof=1) (physical units; "
        "compare with skill).",
        _spread,
        reduce="rms",
        better="none",
        **_ENS,
    )
)
register(
    Metric(
        "skill",
        "skill",
        "RMSE of the ensemble mean, pooled over snapshots as a mean square (physical units).",
        _skill,
        reduce="rms",
        **_ENS,
    )
)
register(
    Metric(
        "spread_skill",
        "spread/skill",
        "sqrt(1 + 1/n) * spread / skill, pooled over snapshots (Fortin et al. 2014); 1 = "
        "calibrated, < 1 under-dispersed (< 0.8 flagged), > 1 over-dispersed (> 1.2 flagged).",
        _spread_skill_pair,
        reduce="ratio_rms",
        better="one",
        **_ENS,
    )
)


# ---- band spectral errors ----------------------------------------------------------------------


def _spectral_rows(band: str):
    def fn(pred: Fields, target: Target) -> np.ndarray | None:
        b = band_edges(pred.n_lo, pred.n_hi)[band]
        k = np.arange(1, pred.n // 2 + 1)  # the reported range of the prediction's grid
        mask = b.mask(k)
        if not mask.any() or (band == "generated" and pred.n < pred.n_hi):
            return None  # the lo grid holds only the Nyquist shell of the generated band
        kb = k[mask]
        return np.stack([pred.power.mean(axis=0)[:, kb], target.spectrum[:, kb]], axis=1)

    return fn


for _band in BANDS:
    register(
        Metric(
            f"spectral_error.{_band}",
            f"{_band} err",
            f"mean over k in the {_band} band of |log10(E_pred(k) / E_ref(k))| on the snapshot- "
            "and member-averaged spectra (0 = identical, 0.3 = a factor 2); E_ref = the truth "
            "of the same snapshots, or the reference split's mean (held-out sims).",
            _spectral_rows(_band),
            needs="target",
            reduce="log_ratio_of_means",
            kinds=PREDICTIONS | {"input"},
            table="spectral",
            summary=_band == "generated",
            timeseries=True,
        )
    )


# ---- band coherence ----------------------------------------------------------------------------


def _coherence(pred: Fields, target: Target, of_mean: bool) -> dict[str, np.ndarray]:
    truth = target.fields
    assert truth is not None

    def compute() -> dict[str, np.ndarray]:
        t_coef, t_pow = truth.coef[0], truth.power[0]
        if of_mean:
            x = shell_cross(pred.coef_mean, t_coef)
            return band_coherence(x, pred.power_of_mean, t_pow, pred.n_lo, pred.n_hi)
        x = shell_cross(pred.coef, t_coef[None])
        coh = band_coherence(x, pred.power, t_pow[None], pred.n_lo, pred.n_hi)
        return {b: v.mean(axis=0) for b, v in coh.items()}  # mean over members

    return pred.memo(("coherence", of_mean), compute)


def _coherence_row(band: str, of_mean: bool):
    def fn(pred: Fields, target: Target) -> np.ndarray | None:
        return _coherence(pred, target, of_mean).get(band)

    return fn


for _of_mean, _name, _who in (
    (False, "coherence", "single members (mean over members)"),
    (True, "coherence_ensemble_mean", "the ensemble mean"),
):
    for _band in BANDS:
        register(
            Metric(
                f"{_name}.{_band}",
                f"{_band} coh." + (" (mean)" if _of_mean else ""),
                f"Re(sum F_pred conj F_true) / sqrt(sum |F_pred|^2 sum |F_true|^2) over the "
                f"wavevectors of the {_band} band, of {_who}, per snapshot, then mean (1 = phases "
                "right, ~0 random, < 0 anti-correlated).",
                _coherence_row(_band, _of_mean),
                better="higher",
                table="coherence",
                summary=(_band == "transition" and not _of_mean),
                timeseries=not _of_mean,
            )
        )


def _member_member_row(band: str):
    def fn(pred: Fields, target: Target) -> np.ndarray | None:
        coh = pred.memo(
            "coherence_member_member",
            lambda: member_pair_coherence(pred.coef, pred.n_lo, pred.n_hi),
        )
        return coh.get(band)

    return fn


for _band in BANDS:
    register(
        Metric(
            f"coherence_member_member.{_band}",
            f"{_band} coh. (member-member)",
            f"mean over member pairs i < j of Re(sum F_i conj F_j) / sqrt(sum |F_i|^2 sum "
            f"|F_j|^2) over the wavevectors of the {_band} band (member j in the truth's role), "
            "per snapshot, then mean. A calibrated ensemble has it equal to the member coherence "
            "with the truth; higher = members agree with each other more than with the truth.",
            _member_member_row(_band),
            needs="none",
            ensemble=True,
            min_members=2,
            better="none",
            table="coherence",
        )
    )


# ---- PDFs and intermittency --------------------------------------------------------------------


def _w1_row(var: str, channels: tuple[str, ...]):
    def fn(pred: Fields, target: Target) -> np.ndarray:
        row = np.full(len(pred.channels), np.nan)
        for ch in channels:
            c = pred.index(ch)
            ref = target.pdf(var, ch)
            if c is None or ref is None:
                continue
            a = pred.pdf(var, ch)
            with np.errstate(divide="ignore", invalid="ignore"):
                row[c] = wasserstein1(a.values, ref.values, presorted=True) / ref.std
        return row

    return fn


def _flatness_row(var: str, channels: tuple[str, ...]):
    def fn(pred: Fields, target: Target) -> np.ndarray:
        row = np.full(len(pred.channels), np.nan)
        for ch in channels:
            c = pred.index(ch)
            if c is not None:
                row[c] = pred.pdf(var, ch).flatness
        return row

    return fn


register(
    Metric(
        "jz_pdf_w1",
        "jz PDF W1/σ",
        "1-Wasserstein distance between the PDFs of jz/rms(jz) (members pooled) and of the "
        "truth's, in units of the truth's std; per snapshot, mean (held-out: vs the reference "
        "split's pooled PDF).",
        _w1_row("value", VALUE_CHANNELS),
        needs="target",
        kinds=PREDICTIONS | {FORECAST_ENSEMBLE},
        channels=VALUE_CHANNELS,
        table="pdf",
        summary=True,
    )
)
register(
    Metric(
        "jz_flatness",
        "jz flatness",
        "S4 / S2^2 of jz (3 = Gaussian; intermittent current sheets give more); compare with "
        "the truth's.",
        _flatness_row("value", VALUE_CHANNELS),
        needs="none",
        kinds=PREDICTIONS | {"truth"},
        channels=VALUE_CHANNELS,
        better="truth",
        table="pdf",
    )
)
for _var in INCREMENT_VARS:
    _where = f"l = {_var[2:]} cell(s) along {_var[1]}"
    register(
        Metric(
            f"increment_w1.{_var}",
            f"δv W1/σ {_var}",
            f"1-Wasserstein distance between the PDFs of the increments v(x + l) - v(x) at "
            f"{_where} (periodic), members pooled, and the truth's, in units of the truth's std.",
            _w1_row(_var, INCREMENT_CHANNELS),
            needs="target",
            channels=INCREMENT_CHANNELS,
            table="pdf",
        )
    )
    register(
        Metric(
            f"increment_flatness.{_var}",
            f"δv flatness {_var}",
            f"S4 / S2^2 of the increments at {_where} (3 = Gaussian); compare with the truth's.",
            _flatness_row(_var, INCREMENT_CHANNELS),
            needs="none",
            kinds=PREDICTIONS | {"truth"},
            channels=INCREMENT_CHANNELS,
            better="truth",
            table="pdf",
        )
    )


# ---- physics -----------------------------------------------------------------------------------


def _div_b(pred: Fields, target: Target) -> float:
    return float(np.mean(divb_residual(pred.x, pred.channels)))


def _jz_curl_b(pred: Fields, target: Target) -> float:
    return float(np.mean(jz_residual(pred.x, pred.channels)))


_PHYS = dict(
    needs="none",
    kinds=PREDICTIONS | {"truth", "input"},
    per_channel=False,
    requires=PHYSICS_CHANNELS,
    better="truth",
    table="physics",
)
register(
    Metric(
        "div_b",
        "div B / rms jz",
        "rms(dBx/dx + dBy/dy) / rms(jz), periodic centred differences (as AthenaK), mean over "
        "members and snapshots; NOT 0 for the truth (see the physics reading).",
        _div_b,
        **{**_PHYS, "kinds": _PHYS["kinds"] | {FORECAST_ENSEMBLE}},
    )
)
register(
    Metric(
        "jz_curl_b",
        "rms(jz - curl B) / rms jz",
        "rms(jz - (dBy/dx - dBx/dy)) / rms(jz), same differences; ~1e-7 for AthenaK output on "
        "its own grid (AthenaK derives jz this way).",
        _jz_curl_b,
        **_PHYS,
    )
)


# ---- forecasts (per initial state and lead time; curves of kind "forecast") --------------------


def _corr(pred: Fields, target: Target) -> np.ndarray:
    return pearson(pred.x[0], _truth(target))


def _energy_rel(fn):
    def row(pred: Fields, target: Target) -> float:
        return float(fn(pred.x[0], pred.channels) / fn(_truth(target), pred.channels) - 1.0)

    return row


_FC = dict(kinds=frozenset({FORECAST}), table="forecast")
register(
    Metric(
        "corr",
        "corr",
        "Pearson correlation of p and y over the grid, per channel, mean over initial states "
        "(1 = the same pattern, 0 = unrelated).",
        _corr,
        better="higher",
        **_FC,
    )
)
register(
    Metric(
        "ke_rel",
        "KE err",
        "E_p / E_y - 1 of the domain-mean kinetic energy <rho |v|^2 / 2> (code units), mean "
        "over initial states (also its mean and max absolute value).",
        _energy_rel(kinetic_energy),
        per_channel=False,
        requires=("density", "velx", "vely", "velz"),
        **_FC,
    )
)
register(
    Metric(
        "me_rel",
        "ME err",
        "E_p / E_y - 1 of the domain-mean magnetic energy <|B|^2 / 2> (code units, 4 pi "
        "absorbed), mean over initial states (also its mean and max absolute value).",
        _energy_rel(magnetic_energy),
        per_channel=False,
        requires=("Bx", "By", "Bz"),
        **_FC,
    )
)
