"""Refusals of ``mhdsr eval``: a sample file is scored only against the truth it came from.

Two checks, each raising :class:`mhdsr.eval.inputs.EvalInputError` that names the file and the
snapshot (the CLI exits 2):

* :func:`check_input` (sims with pixel truth): the file's stored ``input`` (the lo field) must
  be avgpool2 of the truth it is scored against, per snapshot and channel
  ``max|input - avgpool2(truth)| <= INPUT_RTOL * max|avgpool2(truth)|`` with
  :data:`INPUT_RTOL` = 1e-4. ``mhdsr sample`` makes the input with the same float32 avgpool2 as
  eval (difference exactly 0); a float64 mean rounded to float32 differs by at most 1.2e-7 of
  max|truth| (measured on every snapshot of the demo shards' train, val and test splits), so the
  tolerance leaves a factor ~1000 for float32 storage while a permuted ``channels`` attribute,
  replaced truth shards or another snapshot's input differ by O(1). A failing file whose input
  matches the shards' channels in another order is reported as a wrong ``channels`` attribute.
  A file of a model trained with degradation matching (attribute ``degrade`` true: ``mhdsr
  sample`` stored ``degrade(avgpool2(truth), T)`` as its input, T its ``degrade_transfer``) is
  checked against ``degrade(avgpool2(truth), T)`` instead (:func:`expected_input`), with the
  same tolerance.
* :func:`check_rows` (every sim): the samples of a row must belong to that row's input:
  avgpool2 of the row's ensemble mean may not be closer (normalised rms, less than half the
  distance) to the input of a neighbouring row (``NEIGHBOURS`` either side) than to its own,
  which catches samples swapped between snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from mhdsr.eval.inputs import EvalInputError

#: Relative tolerance of ``input == avgpool2(truth)`` (see the module docstring).
INPUT_RTOL = 1e-4
#: Rows either side whose inputs a row's samples are compared with (:func:`check_rows`).
NEIGHBOURS = 2


def file_transfer(attrs: dict[str, Any], rel: str, channels: int) -> np.ndarray | None:
    """The ``(C, K)`` transfer function of a sample file whose input was degraded (attribute
    ``degrade`` true, ``degrade_transfer`` its JSON table); ``None`` for any other file.

    Raises:
        EvalInputError: ``degrade`` is true but ``degrade_transfer`` is missing or malformed.
    """
    if not bool(attrs.get("degrade", False)):
        return None
    from mhdsr.method.degrade import transfer_from_list

    raw = attrs.get("degrade_transfer")
    try:
        table = json.loads(raw) if isinstance(raw, str) else raw
        return transfer_from_list(table, channels, f"{rel}: attribute degrade_transfer").numpy()
    except (ValueError, TypeError) as e:
        raise EvalInputError(
            f"{rel}: attribute degrade is true but degrade_transfer is missing or malformed ({e})"
        ) from None


def expected_input(pooled: np.ndarray, transfer: np.ndarray | None) -> np.ndarray:
    """The input ``mhdsr sample`` makes from ``pooled = avgpool2(truth)`` ``(C, h, w)`` (file
    channels): itself, or ``degrade(pooled, transfer)`` (float64) for a degrade file."""
    if transfer is None:
        return pooled
    import torch

    from mhdsr.method.degrade import degrade

    x = torch.from_numpy(np.asarray(pooled, np.float64))
    return degrade(x, torch.from_numpy(transfer)).numpy()


def _rel_err(lo: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Per channel ``max|lo - pooled| / max|pooled|`` (``(C,)``)."""
    num = np.abs(pooled.astype(np.float64) - lo).max(axis=(-2, -1))
    den = np.maximum(np.abs(pooled.astype(np.float64)).max(axis=(-2, -1)), 1e-30)
    return num / den


def check_input(
    rel: str,
    snapshot: int,
    lo: np.ndarray,
    pooled_all: np.ndarray,
    file_channels: Sequence[str],
    shard_channels: Sequence[str],
) -> None:
    """Refuse a file whose input of ``snapshot`` is not avgpool2 of the truth.

    Args:
        rel: the file (for the message).
        lo: the file's input ``(C, h, w)``, channels ``file_channels``.
        pooled_all: avgpool2 of the truth ``(C_shards, h, w)``, channels ``shard_channels``.

    Raises:
        EvalInputError: a channel differs by more than :data:`INPUT_RTOL` (relative).
    """
    idx = [list(shard_channels).index(c) for c in file_channels]
    err = _rel_err(lo, pooled_all[idx])
    if (err <= INPUT_RTOL).all():
        return
    bad = [c for c, e in zip(file_channels, err, strict=True) if e > INPUT_RTOL]
    # which shard channel each input channel matches, if any
    match = []
    for c in range(lo.shape[0]):
        e = _rel_err(np.broadcast_to(lo[c], pooled_all.shape), pooled_all)
        j = int(np.argmin(e))
        match.append(shard_channels[j] if e[j] <= INPUT_RTOL else None)
    if None not in match and match != list(file_channels):
        raise EvalInputError(
            f"{rel}: snapshot {snapshot}: its channels attribute {list(file_channels)} differs "
            f"from the shards': its input matches the shard channels {match} in that order "
            "(refusing to score channels against the wrong truth)"
        )
    raise EvalInputError(
        f"{rel}: snapshot {snapshot}: the stored input is not avgpool2 of the truth in the shards "
        f"(channels {bad}: max|input - avgpool2(truth)| / max|avgpool2(truth)| = "
        f"{float(err.max()):.3g} > {INPUT_RTOL:g}); the file does not come from these shards, "
        "or the shards were replaced"
    )


def row_distance(pooled: np.ndarray, lo: np.ndarray) -> float:
    """rms of ``pooled - lo`` over the grid, divided by the std of ``lo``, mean over channels."""
    d = np.sqrt(np.mean((pooled.astype(np.float64) - lo) ** 2, axis=(-2, -1)))
    s = np.maximum(lo.astype(np.float64).std(axis=(-2, -1)), 1e-30)
    return float(np.mean(d / s))


def check_rows(rel: str, snapshots: Sequence[int], t: int, pooled: np.ndarray,
               inputs: np.ndarray) -> None:  # fmt: skip
    """Refuse row ``t`` whose samples belong to another snapshot's input.

    Args:
        rel: the file; ``snapshots`` its ``(T,)`` snapshot numbers.
        pooled: avgpool2 of the ensemble mean of row ``t`` ``(C, h, w)``.
        inputs: the file's inputs ``(T, C, h, w)``.

    Raises:
        EvalInputError: a neighbouring row's input is closer than half the own distance.
    """
    own = row_distance(pooled, inputs[t])
    for u in range(max(0, t - NEIGHBOURS), min(len(inputs), t + NEIGHBOURS + 1)):
        if u == t:
            continue
        other = row_distance(pooled, inputs[u])
        if other < 0.5 * own:
            raise EvalInputError(
                f"{rel}: snapshot {snapshots[t]}: its samples belong to the input of snapshot "
                f"{snapshots[u]} (normalised rms of avgpool2(ensemble mean) - input: {other:.3g} "
                f"vs {own:.3g} against its own input); samples and inputs are out of order"
            )
