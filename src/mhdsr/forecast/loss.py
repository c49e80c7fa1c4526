"""The forecast losses: one-step and rolled-out, on windows of normalized states
(docs/design.md "Forecast stage"; configured by :class:`~mhdsr.forecast.config.ForecastLossConfig`).

For a window ``x_0 .. x_{K-1}`` (normalized, spacing ``dt``) and a model with history ``H``
(``f(x_{s-H+1..s}, dt) ~ x_{s+1}``):

    L1 = mean over s = H-1 .. K-2 of  mean((f(x_{s-H+1..s}) - x_{s+1})^2)
    LR = mean over r = 1 .. R      of  mean((y_r - x_{H-1+r})^2),
         y_1 = f(x_0..x_{H-1}),  y_r = f(last H of [x_0..x_{H-1}, y_1..y_{r-1}])
    loss = loss_scale * (w1 * L1 + wR * LR)

means over channels and pixels (and positions / steps), per sample, then over the batch. ``LR``
back-propagates through the whole rollout (each step sees the previous predictions, so the
model learns from the errors it will feed itself at inference). The rollout's
first step is the one-step prediction at ``s = H - 1``, computed once. Errors are computed in
float32 (a bf16 model output is cast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Model = Callable[[Tensor, Tensor], Tensor]


def min_window(history: int, rollout_steps: int) -> int:
    """Snapshots a window needs: ``history + max(1, rollout_steps)``."""
    return history + max(1, rollout_steps)


def _sq(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error over all but the first axis, in float32 or wider."""
    dtype = torch.promote_types(target.dtype, torch.float32)
    return (pred.to(dtype) - target.to(dtype)).square().flatten(1).mean(dim=1)


def forecast_loss(
    model: Model,
    seq: Tensor,
    dt: Tensor,
    *,
    history: int,
    rollout_steps: int,
    one_step_weight: float = 1.0,
    rollout_weight: float = 1.0,
    loss_scale: float = 1.0,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The loss of one batch of windows (see the module docstring).

    Args:
        model: ``model(states (N, H, C, h, w), dt (N,)) -> (N, C, h, w)``.
        seq: ``(B, K, C, h, w)`` normalized windows (float).
        dt: ``(B,)`` step in orbits.
        history: H (1 or 2).
        rollout_steps: R (0 = no rollout loss).
        one_step_weight, rollout_weight, loss_scale: see the module docstring.

    Returns:
        ``(loss, per_sample (B,), parts)``: the scalar loss, its per-window values, and
        ``parts`` ``{"one_step": (B,), "rollout": (B,)}`` (unweighted, unscaled; a part whose
        weight is 0 is absent).

    Raises:
        ValueError: ``seq`` is not 5-D or too short for ``history`` and ``rollout_steps``.
    """
    if seq.ndim != 5:
        raise ValueError(f"seq must be (B, K, C, h, w), got {tuple(seq.shape)}")
    b, k = seq.shape[:2]
    if k < min_window(history, rollout_steps):
        raise ValueError(
            f"a window of {k} snapshots is too short for history {history} and "
            f"{rollout_steps} rollout step(s) (needs {min_window(history, rollout_steps)})"
        )
    parts: dict[str, Tensor] = {}
    first: Tensor | None = None
    if one_step_weight > 0:
        pos = list(range(history - 1, k - 1))
        states = torch.stack([seq[:, s - history + 1 : s + 1] for s in pos])  # (P, B, H, ...)
        preds = model(states.flatten(0, 1), dt.repeat(len(pos)))
        preds = preds.unflatten(0, (len(pos), b))  # (P, B, C, h, w)
        target = torch.stack([seq[:, s + 1] for s in pos])
        err = torch.stack([_sq(preds[i], target[i]) for i in range(len(pos))])
        parts["one_step"] = err.mean(dim=0)
        first = preds[0]
    if rollout_weight > 0 and rollout_steps > 0:
        states = seq[:, :history]
        y = first if first is not None else model(states, dt)
        errs = [_sq(y, seq[:, history])]
        for r in range(2, rollout_steps + 1):
            states = torch.cat([states[:, 1:], y[:, None].to(states.dtype)], dim=1)
            y = model(states, dt)
            errs.append(_sq(y, seq[:, history - 1 + r]))
        parts["rollout"] = torch.stack(errs).mean(dim=0)
    per = torch.zeros(b, dtype=torch.float32, device=seq.device)
    if "one_step" in parts:
        per = per + one_step_weight * parts["one_step"]
    if "rollout" in parts:
        per = per + rollout_weight * parts["rollout"]
    per = loss_scale * per
    return per.mean(), per, parts


@torch.no_grad()
def rollout(model: Model, states: Tensor, dt: Tensor, steps: int) -> Tensor:
    """Autoregressive forecast.

    Args:
        model: as in :func:`forecast_loss`.
        states: ``(B, H, C, h, w)`` normalized initial history, oldest first.
        dt: ``(B,)`` step in orbits.
        steps: L.

    Returns:
        ``(B, L, C, h, w)``: the predictions at ``t0 + dt, ..., t0 + L dt`` (states' dtype).
    """
    out = []
    for _ in range(steps):
        y = model(states, dt).to(states.dtype)
        out.append(y)
        states = torch.cat([states[:, 1:], y[:, None]], dim=1)
    return torch.stack(out, dim=1)
