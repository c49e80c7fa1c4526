"""The numbers of ``mhdsr eval``: per-sim scores of every method, baseline, truth and input.

One sim is processed at a time (:func:`evaluate_sim`), one snapshot at a time inside it, so
memory stays at about one ``(E, C, H, W)`` ensemble plus the sim's truth. Every score is kept
per snapshot as a ``(C,)`` row (a few floats) and spectra as running sums, so the per-sim and
the pooled per-group numbers come from the same records (:func:`curve_metrics`).

Definitions (DESIGN.md, "Metrics"), all per channel, in physical units:

- RMSE / NRMSE of a single sample: per snapshot and member over the grid, then the mean over
  members and snapshots; of the ensemble mean: per snapshot, then the mean over snapshots.
  NRMSE divides by the snapshot's truth std.
- CRPS (fair): per pixel, averaged over the grid, then over snapshots (``metrics.crps_fair``).
- spread/skill: ``sqrt(mean_t (1 + 1/n) spread_t^2) / sqrt(mean_t skill_t^2)`` with the spread
  and skill of ``metrics.spread_skill`` pooled over snapshots as mean squares.
- Spectra: shell sums ``E(k)``, ``k = 1 .. N/2`` (``spectra.radial_spectrum``), averaged over
  snapshots and members; band errors (``spectra.band_errors``) compare the averaged spectra:
  against the truth averaged over the SAME snapshots (sims with pixel truth), or against the
  mean hi spectrum of the reference split (held-out sims).
- Physics: ``divb_residual`` and ``jz_residual`` per field, averaged over members and snapshots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhdsr.eval import metrics as M
from mhdsr.eval.inputs import EvalInputError, SampleFile, ShardTruth, read_inputs, read_samples
from mhdsr.eval.physics_checks import divb_residual, jz_residual
from mhdsr.eval.spectra import band_errors, radial_spectrum

PHYSICS_CHANNELS = ("Bx", "By", "jz")
HELDOUT = "heldout"
#: Relative tolerance of the check ``input == avgpool2(truth)`` for derived inputs.
INPUT_CHECK_RTOL = 1e-4


# ----------------------------------------------------------------------------------------------
# Running records


@dataclass
class Curve:
    """Per-snapshot scores and running spectra of one curve on one sim (or pooled over sims).

    Attributes:
        name: ``"ema/heun-8"``, ``"bilinear"``, ``"truth"``, ``"input"``.
        kind: ``"method"``, ``"baseline"``, ``"truth"`` or ``"input"``.
        n_members: ensemble size (1 for baselines, truth and input).
        rows: score name -> list of per-snapshot ``(C,)`` float64 rows.
        spec_sum, spec_n: sum of ``E(k)`` ``(C, K)`` over snapshots and members, and the count.
        ref_sum, ref_n: sum of the TRUTH spectrum over the same snapshots (sims with truth).
        snapshots: snapshot numbers covered, in processing order.
    """

    name: str
    kind: str
    n_members: int = 1
    rows: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    spec_sum: np.ndarray | None = None
    spec_n: int = 0
    ref_sum: np.ndarray | None = None
    ref_n: int = 0
    snapshots: list[int] = field(default_factory=list)

    def add_spectrum(self, e: np.ndarray, ref: np.ndarray | None = None) -> None:
        """Add spectra ``e`` ``(M, C, K)`` of one snapshot and the truth's ``ref`` ``(C, K')``
        (truncated to ``K``)."""
        s = e.sum(axis=0)
        self.spec_sum = s if self.spec_sum is None else self.spec_sum + s
        self.spec_n += e.shape[0]
        if ref is not None:
            r = ref[..., : e.shape[-1]]
            self.ref_sum = r.copy() if self.ref_sum is None else self.ref_sum + r
            self.ref_n += 1

    def add_rows(self, **scores: np.ndarray) -> None:
        for k, v in scores.items():
            self.rows[k].append(np.asarray(v, dtype=np.float64))

    def table(self, name: str) -> np.ndarray | None:
        """``(T, C)`` (or ``(T,)``) array of a score, ``None`` if never recorded."""
        return np.stack(self.rows[name]) if self.rows.get(name) else None

    @property
    def spectrum(self) -> np.ndarray | None:
        """Mean spectrum ``(C, K)`` over snapshots and members."""
        return None if self.spec_sum is None else self.spec_sum / self.spec_n

    @property
    def ref_spectrum(self) -> np.ndarray | None:
        """Mean truth spectrum over the same snapshots."""
        return None if self.ref_sum is None else self.ref_sum / self.ref_n

    def merge(self, other: Curve) -> None:
        """Pool ``other`` (same curve on another sim) into this record."""
        for k, v in other.rows.items():
            self.rows[k].extend(v)
        for attr in ("spec", "ref"):
            o = getattr(other, f"{attr}_sum")
            if o is not None:
                mine = getattr(self, f"{attr}_sum")
                setattr(self, f"{attr}_sum", o.copy() if mine is None else mine + o)
                setattr(self, f"{attr}_n", getattr(self, f"{attr}_n") + getattr(other, f"{attr}_n"))
        self.snapshots.extend(other.snapshots)
        self.n_members = max(self.n_members, other.n_members)


@dataclass
class SimResult:
    """Everything computed for one sim (all its method files, baselines, truth and input)."""

    sim: str
    group: str  # split with pixel truth ("test", "val", ...) or "heldout"
    has_truth: bool
    snapshots: list[int]
    times: list[float]
    files: dict[str, str]  # method -> file (relative to the samples folder)
    curves: dict[str, Curve]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Per-snapshot scores (pure)


def spectrum(f: np.ndarray) -> np.ndarray:
    """Shell-summed spectra ``(..., K)``, ``k = 1 .. N/2`` of fields ``(..., N, N)``."""
    return radial_spectrum(f)[1]


def point_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """RMSE and NRMSE of deterministic fields ``(M, C, H, W)`` vs ``truth`` ``(C, H, W)``,
    averaged over the ``M`` fields: ``{"rmse": (C,), "nrmse": (C,)}``."""
    return {
        "rmse": M.rmse(pred, truth[None]).mean(axis=0),
        "nrmse": M.nrmse(pred, truth[None]).mean(axis=0),
    }


def ensemble_scores(ens: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of one snapshot's ensemble ``(E, C, H, W)`` against ``truth`` ``(C, H, W)``.

    Returns:
        ``(C,)`` float64 rows: ``rmse``/``nrmse`` (single members, mean over members),
        ``rmse_ensemble_mean``/``nrmse_ensemble_mean``, and for ``E >= 2`` also ``crps``,
        ``spread2`` (grid mean of the ddof=1 member variance), ``skill2`` (MSE of the ensemble
        mean) and ``spread2_cal = (1 + 1/E) spread2``.
    """
    out = point_scores(ens, truth)
    mean = ens.mean(axis=0, dtype=np.float64)
    out["rmse_ensemble_mean"] = M.rmse(mean, truth)
    out["nrmse_ensemble_mean"] = M.nrmse(mean, truth)
    e = ens.shape[0]
    if e >= 2:
        out["crps"] = M.crps_fair(ens, truth, member_axis=0)
        spread, skill, _ = M.spread_skill(ens, truth, member_axis=0)
        out["spread2"] = spread**2
        out["skill2"] = skill**2
        out["spread2_cal"] = (1.0 + 1.0 / e) * spread**2
    return out


def physics_scores(fields: np.ndarray, channels: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"div_b": (), "jz_curl_b": ()}`` residuals of ``(M, C, N, N)`` fields, mean over M."""
    return {
        "div_b": np.mean(divb_residual(fields, channels)),
        "jz_curl_b": np.mean(jz_residual(fields, channels)),
    }


def upsample_np(lo: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """Periodic ``mhdsr.interpolant.upsample`` of ``(C, h, w)`` float32, as numpy float32."""
    import torch

    from mhdsr.interpolant import upsample

    with torch.no_grad():
        return upsample(torch.from_numpy(np.ascontiguousarray(lo)), factor, mode).numpy()


def avgpool2_np(hi: np.ndarray) -> np.ndarray:
    """``mhdsr.interpolant.avgpool2`` of ``(..., H, W)`` float32, as numpy float32."""
    import torch

    from mhdsr.interpolant import avgpool2

    return avgpool2(torch.from_numpy(np.ascontiguousarray(hi))).numpy()


# ----------------------------------------------------------------------------------------------
# One sim


@dataclass
class SimJob:
    """What :func:`evaluate_sim` needs to know about one sim."""

    sim: str
    group: str
    split: str | None  # split holding its pixel truth (None for held-out sims)
    files: list[SampleFile]


def plan_jobs(files: Sequence[SampleFile], truth: ShardTruth) -> list[SimJob]:
    """Group files by sim and find each sim's truth split.

    A ``derived_avgpool2`` file needs its sim among a hi split's sims (preferring the split in
    its ``source`` attribute, ``"shards:<split>"``) and every one of its keys in that split; a
    ``native`` file is a held-out sim (no pixel truth).

    Raises:
        EvalInputError: a derived file's sim or keys are not in the shards, a channel is not
            in the shards, or one sim has both derived and native files.
    """
    by_sim: dict[str, list[SampleFile]] = defaultdict(list)
    for f in files:
        unknown = [c for c in f.channels if c not in truth.channels]
        if unknown:
            raise EvalInputError(
                f"{f.rel}: channels {unknown} are not in the shards' {truth.channels}"
            )
        by_sim[f.sim].append(f)
    jobs = []
    for sim, group in by_sim.items():
        kinds = {f.lo_kind for f in group}
        if len(kinds) > 1:
            raise EvalInputError(
                f"sim {sim!r} has both derived and native-lo sample files: {[f.rel for f in group]}"
            )
        if kinds == {"native"}:
            jobs.append(SimJob(sim, HELDOUT, None, group))
            continue
        f0 = group[0]
        cands = truth.splits_with_sim(sim)
        src = str(f0.attrs.get("source", ""))
        wanted = src.split(":", 1)[1] if src.startswith("shards:") else None
        if wanted in cands or (not cands and wanted and truth.has_split(wanted)):
            split = wanted
        elif cands:
            split = cands[0]
        else:
            raise EvalInputError(
                f"{f0.rel}: sim {sim!r} has no truth in the shards {truth.root} (hi splits hold "
                f"{_split_sims(truth)}); evaluate against the shard folder it was sampled from"
            )
        index = truth.index(split)
        for f in group:
            missing = [k for k in f.truth_keys() if k not in index or "hi.npy" not in index[k]]
            if missing:
                raise EvalInputError(
                    f"{f.rel}: sim {sim!r} has no truth in the shards {truth.root} for "
                    f"{len(missing)} snapshot(s), e.g. keys {missing[:3]} (split {split!r})"
                )
        jobs.append(SimJob(sim, split, split, group))
    order = {"test": 0, "val": 1, "train": 2, HELDOUT: 9}
    return sorted(jobs, key=lambda j: (order.get(j.group, 5), j.group, j.sim))


def _split_sims(truth: ShardTruth) -> dict[str, list[str]]:
    return {
        s: list(r.get("sims", []))
        for s, r in truth.manifest["splits"].items()
        if r.get("source") == "hi"
    }


def _union_inputs(
    job: SimJob,
) -> tuple[list[int], list[float], list[str | None], np.ndarray, list[str]]:
    """Union of the snapshots of a sim's files, sorted: numbers, times, keys, inputs
    ``(T, C, h, w)`` and notes (inputs of one snapshot that differ between files)."""
    notes: list[str] = []
    table: dict[int, tuple[float, str | None, np.ndarray, str]] = {}
    for f in job.files:
        lo = read_inputs(f.path)
        keys = f.truth_keys() if job.split is not None else (f.keys or [None] * len(f.snapshots))
        for i, n in enumerate(f.snapshots.tolist()):
            if n in table:
                other = table[n]
                if not np.array_equal(other[2], lo[i]):
                    d = float(np.max(np.abs(other[2] - lo[i])))
                    notes.append(
                        f"sim {job.sim} snapshot {n}: input differs between {other[3]} and {f.rel} "
                        f"(max |diff| {d:.3g}); the baselines use the first"
                    )
            else:
                table[n] = (float(f.times[i]), keys[i], lo[i], f.rel)
    snaps = sorted(table)
    return (
        snaps,
        [table[n][0] for n in snaps],
        [table[n][1] for n in snaps],
        np.stack([table[n][2] for n in snaps]),
        notes,
    )


def evaluate_sim(
    job: SimJob,
    truth: ShardTruth,
    *,
    baselines: Sequence[str],
    panel_snapshots: Iterable[int] = (),
    on_panel: Callable[[dict[str, Any]], None] | None = None,
    on_input: Callable[[np.ndarray], None] | None = None,
    on_file: Callable[[SampleFile], None] | None = None,
) -> SimResult:
    """Score every method file of one sim, the baselines, the truth and the input.

    Args:
        job: the sim (from :func:`plan_jobs`).
        truth: the shard folder (pixel truth for sims with a split).
        baselines: baseline names (``"bilinear"``, ``"bicubic"``), upsampling the file's input.
        panel_snapshots: snapshot numbers for which ``on_panel`` receives the fields.
        on_panel: called once per panel snapshot with ``{"sim", "group", "snapshot", "time",
            "fields": {column name: (C, H, W)}, "methods", "channels", "has_truth"}``; fields in
            physical units (input lo, baselines, per method one sample and the ensemble mean,
            truth), the lo input on its own grid.
        on_input: called with each input ``(C, h, w)`` (e.g. to collect domain-gap values).
        on_file: called after each method file is done (progress).

    Returns:
        The sim's :class:`SimResult`.

    Raises:
        EvalInputError: a truth field is missing or belongs to another sim.
    """
    f0 = job.files[0]
    channels = list(f0.channels)
    factor = f0.n_hi // f0.n_lo
    physics = all(c in channels for c in PHYSICS_CHANNELS)
    snaps, times, keys, inputs, notes = _union_inputs(job)
    has_truth = job.split is not None
    panel_set = set(panel_snapshots)
    panels: dict[int, dict[str, np.ndarray]] = {n: {} for n in snaps if n in panel_set}

    # ---- truth of the union of snapshots (C of the files' channels), checked against the input
    hi = None
    if has_truth:
        idx = [truth.channels.index(c) for c in channels]  # checked by plan_jobs
        hi = np.empty((len(snaps), len(channels), f0.n_hi, f0.n_hi), np.float32)
        for i, key in enumerate(keys):
            rec = truth.record(job.split, key)
            if rec.get("sim", job.sim) != job.sim:
                raise EvalInputError(
                    f"{f0.rel}: key {key} of split {job.split!r} belongs to sim "
                    f"{rec.get('sim')!r}, not {job.sim!r}"
                )
            hi[i] = truth.hi(job.split, key)[idx]
        if factor == 2:  # per channel: max |input - avgpool2(truth)| / max |avgpool2(truth)|
            pooled = avgpool2_np(hi)
            scale = np.maximum(np.abs(pooled).max(axis=(0, 2, 3)), 1e-30)
            d = float((np.abs(pooled - inputs).max(axis=(0, 2, 3)) / scale).max())
            if d > INPUT_CHECK_RTOL:
                notes.append(
                    f"sim {job.sim}: input differs from avgpool2(truth) by {d:.3g} (relative max); "
                    "the sample files may not come from these shards"
                )

    # ---- truth, input and baselines, one snapshot at a time
    curves: dict[str, Curve] = {}
    cur_truth = curves.setdefault("truth", Curve("truth", "truth"))
    cur_input = curves.setdefault("input", Curve("input", "input"))
    base_curves = {b: curves.setdefault(b, Curve(b, "baseline")) for b in baselines}
    truth_spec: dict[int, np.ndarray] = {}
    for i, n in enumerate(snaps):
        lo = inputs[i]
        if on_input is not None:
            on_input(lo)
        y = hi[i] if hi is not None else None
        ey = spectrum(y) if y is not None else None
        if y is not None:
            truth_spec[n] = ey
            cur_truth.add_spectrum(ey[None], ey)
            cur_truth.snapshots.append(n)
            if physics:
                cur_truth.add_rows(**physics_scores(y[None], channels))
        cur_input.add_spectrum(spectrum(lo)[None], ey)
        cur_input.snapshots.append(n)
        if physics:
            cur_input.add_rows(**physics_scores(lo[None], channels))
        for b, cur in base_curves.items():
            up = upsample_np(lo, factor, b)
            cur.add_spectrum(spectrum(up)[None], ey)
            cur.snapshots.append(n)
            if y is not None:
                cur.add_rows(**point_scores(up[None], y))
            if physics:
                cur.add_rows(**physics_scores(up[None], channels))
            if n in panels:
                panels[n][b] = up
        if n in panels:
            panels[n] = {"input lo": lo, **panels[n]}

    # ---- methods, one file and one snapshot at a time
    files: dict[str, str] = {}
    order = {n: i for i, n in enumerate(snaps)}
    for f in job.files:
        files[f.method] = f.rel
        cur = curves.setdefault(f.method, Curve(f.method, "method", n_members=f.n_members))
        for t, n in enumerate(f.snapshots.tolist()):
            ens = read_samples(f.path, t)
            if not np.isfinite(ens).all():
                raise EvalInputError(f"{f.rel}: samples of snapshot {n} hold nan or inf")
            cur.add_spectrum(spectrum(ens), truth_spec.get(n))
            cur.snapshots.append(n)
            if hi is not None:
                cur.add_rows(**ensemble_scores(ens, hi[order[n]]))
            if physics:
                cur.add_rows(**physics_scores(ens, channels))
            if n in panels:
                panels[n][f"{f.method} sample"] = ens[0]
                if f.n_members > 1:
                    panels[n][f"{f.method} mean (E={f.n_members})"] = ens.mean(axis=0)
        if on_file is not None:
            on_file(f)

    if on_panel is not None:
        for n, fields in panels.items():
            if hi is not None:
                fields["truth"] = hi[order[n]]
            on_panel(
                {
                    "sim": job.sim,
                    "group": job.group,
                    "snapshot": n,
                    "time": times[order[n]],
                    "fields": fields,
                    "methods": list(files),
                    "channels": channels,
                    "has_truth": has_truth,
                }
            )
    if not physics:
        notes.append(
            f"physics residuals skipped: channels {channels} lack some of {list(PHYSICS_CHANNELS)}"
        )
    return SimResult(job.sim, job.group, has_truth, snaps, times, files, curves, notes)


# ----------------------------------------------------------------------------------------------
# Reference statistics of a hi split (held-out sims and the domain gap)


@dataclass
class Reference:
    """Mean hi spectrum and avgpool2(hi) statistics of a hi split, for the given channels."""

    split: str
    n_snapshots: int
    times: list[float]
    hi_spectrum: np.ndarray  # (C, K_hi)
    lo_spectrum: np.ndarray  # (C, K_lo), of avgpool2(hi)
    lo_values: list[list[np.ndarray]]  # per channel: strided value samples of avgpool2(hi)


def value_stride(total: int, cap: int) -> int:
    """Pixel stride so that at most about ``cap`` of ``total`` values are kept (>= 1)."""
    return max(1, -(-total // cap))


def take_values(field2d: np.ndarray, stride: int, offset: int) -> np.ndarray:
    """``field2d.ravel()[offset % stride :: stride]`` as float32 (an even subsample)."""
    return np.asarray(field2d, np.float32).ravel()[offset % stride :: stride].copy()


def check_reference_split(truth: ShardTruth, split: str) -> None:
    """Raise EvalInputError unless ``split`` is a hi split of the shards (cheap; no data read)."""
    if not truth.has_split(split):
        raise EvalInputError(
            f"shards {truth.root}: no hi split {split!r} for the held-out reference (set "
            f"reference_split to one of {list(_split_sims(truth))})"
        )


def reference_stats(truth: ShardTruth, split: str, channels: Sequence[str], cap: int) -> Reference:
    """One pass over a hi split: mean hi spectrum, mean avgpool2(hi) spectrum, value samples.

    Raises:
        EvalInputError: the split is missing or empty, or lacks a channel.
    """
    check_reference_split(truth, split)
    idx = [truth.channels.index(c) for c in channels]
    n_total = int(truth.manifest["splits"][split]["samples"])
    h, w = truth.hi_shape[-2:]
    stride = value_stride(n_total * (h // 2) * (w // 2), cap)
    hi_sum = lo_sum = None
    values: list[list[np.ndarray]] = [[] for _ in channels]
    times: list[float] = []
    n = 0
    for key, arr in truth.iter_hi(split):
        x = arr[idx]
        lo = avgpool2_np(x)
        eh, el = spectrum(x), spectrum(lo)
        hi_sum = eh if hi_sum is None else hi_sum + eh
        lo_sum = el if lo_sum is None else lo_sum + el
        for c in range(len(channels)):
            values[c].append(take_values(lo[c], stride, n))
        t = truth.record(split, key).get("time")
        if t is not None:
            times.append(float(t))
        n += 1
    if n == 0:
        raise EvalInputError(f"shards {truth.root}: split {split!r} holds no hi field")
    return Reference(split, n, times, hi_sum / n, lo_sum / n, values)


# ----------------------------------------------------------------------------------------------
# Metrics of a curve (one sim or pooled over a group)


def _mean_rows(cur: Curve, name: str) -> np.ndarray | None:
    t = cur.table(name)
    return None if t is None else t.mean(axis=0)


def curve_metrics(
    cur: Curve,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
    *,
    reference: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-channel metrics of a curve: ``{channel: {rmse, nrmse, ..., spectral_error: {...}}}``.

    Args:
        cur: the curve's records.
        channels: channel names (C).
        n_lo, n_hi: lo and hi grid sizes (band edges).
        reference: ``(C, K)`` reference spectrum (held-out sims); ``None`` = the truth over the
            same snapshots (``cur.ref_spectrum``).

    Returns:
        Plain floats (``nan`` where undefined: :mod:`mhdsr.eval.report` turns them into nulls
        with a reason). Keys present only where they apply: point scores need truth; ensemble
        scores need a method; the lo input has no generated band.
    """
    out: dict[str, dict[str, Any]] = {ch: {} for ch in channels}
    names = ["rmse", "nrmse"]
    if cur.kind == "method":
        names += ["rmse_ensemble_mean", "nrmse_ensemble_mean", "crps"]
    has_truth = cur.table("rmse") is not None
    for name in names if has_truth else []:
        vals = _mean_rows(cur, name)
        for c, ch in enumerate(channels):
            out[ch][name] = None if vals is None else float(vals[c])
    if has_truth and cur.kind == "method":
        s2, s2c, k2 = (_mean_rows(cur, n) for n in ("spread2", "spread2_cal", "skill2"))
        for c, ch in enumerate(channels):
            if s2 is None:
                out[ch].update(spread=None, skill=None, spread_skill=None)
                out[ch]["null_reasons"] = {
                    k: f"ensemble of {cur.n_members} member: needs >= 2"
                    for k in ("crps", "spread", "skill", "spread_skill")
                }
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[ch]["spread"] = float(np.sqrt(s2[c]))
                    out[ch]["skill"] = float(np.sqrt(k2[c]))
                    out[ch]["spread_skill"] = float(np.sqrt(s2c[c]) / np.sqrt(k2[c]))
    spec = cur.spectrum
    ref = reference if reference is not None else cur.ref_spectrum
    if spec is not None and ref is not None:
        kk = np.arange(1, spec.shape[-1] + 1)
        ref = ref[..., : spec.shape[-1]]
        errs = band_errors(spec, ref, kk, n_lo, n_hi)
        if cur.kind == "input" or spec.shape[-1] <= n_lo // 2:
            errs.pop("generated", None)  # the lo grid holds only the Nyquist shell of it
        for c, ch in enumerate(channels):
            out[ch]["spectral_error"] = {b: float(v[c]) for b, v in errs.items()}
    return out


def physics_metrics(cur: Curve) -> dict[str, float] | None:
    """``{"div_b", "jz_curl_b"}`` means over snapshots, ``None`` if not computed."""
    if cur.table("div_b") is None:
        return None
    return {k: float(cur.table(k).mean()) for k in ("div_b", "jz_curl_b")}


def pool_curves(results: Sequence[SimResult]) -> dict[str, dict[str, Curve]]:
    """``group -> curve name -> Curve`` pooled over the group's sims."""
    out: dict[str, dict[str, Curve]] = {}
    for r in results:
        g = out.setdefault(r.group, {})
        for name, cur in r.curves.items():
            if name not in g:
                g[name] = Curve(name, cur.kind, cur.n_members)
            g[name].merge(cur)
    return out
