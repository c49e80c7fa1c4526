"""Calibration of the sampler's source temperature on the validation split.

An ensemble is calibrated when its spread matches its error: spread/skill = 1 (the eval's
``spread_skill``, with the finite-ensemble factor sqrt(1 + 1/n); Fortin et al. 2014, J. Hydrometeor.
15:1708). The lever is the per-channel source temperature ``sampler.temperature`` (``x0 = T sigma
eps``, :class:`mhdsr.method.noise.SourceTemperature`): the members' spread grows with ``T`` while
the ensemble mean, and so the skill, stays to first order where it is. One step of

    T_c <- clip(T_c / rho_c, t_min, t_max),   rho_c = spread/skill of channel c at T_c

(exact when the spread is proportional to ``T`` and the skill does not move) is repeated on a
fresh validation evaluation until every ``rho_c`` is within the tolerance. The temperatures are
fitted on the validation split only; the test split and held-out runs are scored with the result
(scripts/calibrate.sh runs the loop with ordinary ``mhdsr sample`` / ``mhdsr eval`` commands).

    python -m mhdsr.eval.calibration --metrics runs/cal/round1/eval/metrics.json --group val \
        --temperature '[1.0]' --out runs/cal/round1/calibration.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mhdsr.errors import ConfigError

#: temperatures are kept in [T_MIN, T_MAX] (a ratio far outside says the model, not the
#: temperature, is wrong)
T_MIN, T_MAX = 0.25, 4.0


def spread_skill(
    metrics: Mapping[str, Any], group: str, method: str | None = None
) -> tuple[str, dict[str, float]]:
    """``(method, {channel: spread/skill})`` of one stochastic method in a metrics.json group.

    Args:
        metrics: a super-resolution metrics.json of ``mhdsr eval`` (loaded).
        group: the split the samples came from (``val``).
        method: a method name such as ``ema/heun-4``; None = the only model method of the group.

    Raises:
        ConfigError: the group or method is missing, several methods and none chosen, or a
            channel lacks a finite spread/skill.
    """
    summary = metrics.get("summary", {}).get(group)
    if not isinstance(summary, Mapping):
        raise ConfigError(
            f"metrics.json has no group {group!r} (groups: {sorted(metrics.get('summary', {}))})"
        )
    models = [m for m in summary if "/" in m]  # model methods are weights/sampler-steps
    if method is None:
        if len(models) != 1:
            raise ConfigError(
                f"group {group!r} holds model methods {models}; choose one with --method"
            )
        method = models[0]
    if method not in summary:
        raise ConfigError(f"group {group!r} has no method {method!r} (methods: {models})")
    out: dict[str, float] = {}
    for ch, v in summary[method].items():
        r = v.get("spread_skill") if isinstance(v, Mapping) else None
        if not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ConfigError(
                f"group {group!r}, method {method!r}, channel {ch!r}: spread/skill {r!r} is not a positive number"
            )
        out[ch] = float(r)
    return method, out


def next_temperature(
    current: Sequence[float], ratio: Mapping[str, float], channels: Sequence[str]
) -> list[float]:
    """One calibration step ``T_c <- clip(T_c / rho_c, T_MIN, T_MAX)`` (module docstring).

    Args:
        current: ``[T]`` (every channel) or one temperature per channel, in ``channels`` order.
        ratio: spread/skill per channel name at ``current``.
        channels: the model's channel order.

    Returns:
        one temperature per channel.

    Raises:
        ConfigError: ``current`` has neither 1 nor ``len(channels)`` values, or a channel has no
            ratio.
    """
    if len(current) not in (1, len(channels)):
        raise ConfigError(f"temperature has {len(current)} values for {len(channels)} channels")
    t = list(current) * len(channels) if len(current) == 1 else list(current)
    missing = [c for c in channels if c not in ratio]
    if missing:
        raise ConfigError(f"no spread/skill for channel(s) {missing}")
    return [min(T_MAX, max(T_MIN, float(ti) / ratio[c])) for ti, c in zip(t, channels)]


def select(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The evaluated round whose worst channel is closest to calibrated: the smallest
    ``max_c |log(spread/skill_c)|`` (a proposal that was never evaluated is never chosen).

    Raises:
        ConfigError: no record.
    """
    if not records:
        raise ConfigError("no calibration round to select from")
    return min(records, key=lambda r: max(abs(math.log(v)) for v in r["spread_skill"]))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: read a validation metrics.json, write the next temperature (JSON) and print it as a
    ``sampler.temperature=[...]`` override. Exit 2 with a message on bad input."""
    p = argparse.ArgumentParser(
        prog="python -m mhdsr.eval.calibration", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--metrics", help="metrics.json of `mhdsr eval` on validation samples")
    p.add_argument("--group", default="val", help="the validation group (split) name")
    p.add_argument(
        "--method", default=None, help="model method, e.g. ema/heun-4 (default: the only one)"
    )
    p.add_argument(
        "--temperature",
        default="[1.0]",
        help="the temperature the samples were drawn with (JSON list)",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=0.1,
        help="converged when |spread/skill - 1| <= tol on every channel",
    )
    p.add_argument("--out", required=True, help="where to write the step's JSON record")
    p.add_argument(
        "--select", nargs="+", default=None,
        help="instead: round records to choose the shipped temperature from (written to --out)",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.select:
        try:
            recs = []
            for f in a.select:
                try:
                    recs.append(json.loads(Path(f).read_text()))
                except (OSError, ValueError) as e:
                    raise ConfigError(f"{f}: cannot read a calibration record ({e})") from None
            best = dict(select(recs))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        best["rounds"] = recs
        _write(Path(a.out), best)
        print("sampler.temperature=[" + ",".join(f"{v:.4g}" for v in best["temperature"]) + "]")
        return 0
    try:
        if not a.metrics:
            raise ConfigError("--metrics is required (or --select)")
        try:
            metrics = json.loads(Path(a.metrics).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{a.metrics}: cannot read a metrics.json ({e})") from None
        try:
            current = [float(v) for v in json.loads(a.temperature)]
        except (ValueError, TypeError):
            raise ConfigError(
                f"--temperature {a.temperature!r}: expected a JSON list of numbers"
            ) from None
        channels = list(metrics.get("channels") or [])
        method, ratio = spread_skill(metrics, a.group, a.method)
        channels = channels or list(ratio)
        new = next_temperature(current, ratio, channels)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    converged = all(abs(ratio[c] - 1) <= a.tol for c in channels)
    record = {
        "metrics": str(a.metrics), "group": a.group, "method": method, "channels": channels,
        "temperature": current if len(current) > 1 else current * len(channels),
        "spread_skill": [ratio[c] for c in channels], "next_temperature": new,
        "converged": converged, "tol": a.tol,
    }  # fmt: skip
    _write(Path(a.out), record)
    print("sampler.temperature=[" + ",".join(f"{v:.4g}" for v in new) + "]")
    return 0


def _write(out: Path, record: Mapping[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    raise SystemExit(main())
