"""A learning-rate curve's optimum and how it moves with width: ``transfer``'s curve maths.

Pure functions of arrays and table rows, learning rates in log2 (octaves): no results, no
files. ``transfer`` builds their inputs from run results, calls them, and re-exports them;
its docstring states the rules. ``fitted_optimum`` refines one seed's grid argmin with
``parabola_vertex`` and marks an edge optimum; ``lr_drift`` measures how far one pair's
fitted optimum moves over widths; ``wider_is_better`` tries the lr tuned at the narrowest
width at every wider one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def parabola_vertex(x: Sequence[float], y: Sequence[float]) -> float:
    """The vertex of the parabola through three points, clamped to ``[x[0], x[2]]``.

    ``x`` ascending, spacing arbitrary. Newton form: with slope ``d1`` between the first two
    points and second divided difference ``c``, p'(v) = 0 at v = (x0 + x1)/2 - d1 / (2c).
    When the points have no minimum (c <= 0: collinear, or a cap), returns ``x[1]``.
    """
    (x0, x1, x2), (y0, y1, y2) = x, y
    d1 = (y1 - y0) / (x1 - x0)
    c = ((y2 - y1) / (x2 - x1) - d1) / (x2 - x0)
    if not c > 0:  # also catches NaN
        return float(x1)
    return float(min(max((x0 + x1) / 2 - d1 / (2 * c), x0), x2))


def fitted_optimum(log2_lr: np.ndarray, loss: np.ndarray) -> dict | None:
    """One seed's best log2 lr from its losses (L,) at ascending log2 lrs (L,); +inf diverged.

    Returns None when every lr diverged; else ``log2_lr`` (the optimum), ``grid_log2_lr``
    (the grid argmin; on a tie, the smaller lr), ``fitted`` (whether a parabola through
    the argmin and its two neighbours gave it) and ``edge``: "low" or "high" when the
    argmin is the first or last lr of the curve ("both" for a single lr), so the true
    optimum may lie outside the sweep, else None. An edge argmin, or a diverged
    neighbour, keeps the grid point: nothing is extrapolated.
    """
    if not np.isfinite(loss).any():
        return None
    i, last = int(np.argmin(loss)), len(loss) - 1
    edge = {(True, True): "both", (True, False): "low", (False, True): "high"}.get(
        (i == 0, i == last)
    )
    near = slice(i - 1, i + 2)  # the argmin and its neighbours, when interior
    fitted = edge is None and bool(np.isfinite(loss[near]).all())
    best = parabola_vertex(log2_lr[near], loss[near]) if fitted else float(log2_lr[i])
    return {"log2_lr": best, "grid_log2_lr": float(log2_lr[i]), "fitted": fitted, "edge": edge}


def lr_drift(rows: list[dict]) -> dict:
    """How far one pair's seed-mean fitted best log2 lr moves over its width ``rows``.

    ``drift``: the largest minus the smallest mean, in octaves (NaN with fewer than two
    widths that have a best lr). ``edge_widths``: the widths with an edge optimum.
    ``drift_bound``: "measured" with none; "lower bound" when an edge can only widen the
    drift (no top width has a seed at the low edge, no bottom one at the high edge);
    else "uncertain".
    """
    rows = [r for r in rows if r["n_seeds"]]
    edge_widths = [r["width"] for r in rows if r["edge"]]
    if len(rows) < 2:
        return {"drift": math.nan, "drift_bound": None, "edge_widths": edge_widths}
    means = [r["fitted_log2_lr_mean"] for r in rows]
    top, bottom = max(means), min(means)
    top_sure = any(not r["edge_low"] for r in rows if r["fitted_log2_lr_mean"] == top)
    bottom_sure = any(not r["edge_high"] for r in rows if r["fitted_log2_lr_mean"] == bottom)
    bound = "lower bound" if top_sure and bottom_sure else "uncertain"
    return {"drift": top - bottom, "drift_bound": bound if edge_widths else "measured",
            "edge_widths": edge_widths}  # fmt: skip


def wider_is_better(curves: list[dict]) -> dict:
    """Whether, at the lr tuned at the narrowest width, loss falls strictly with width.

    ``curves``: one pair's ``transfer_curves``, by width. The transferred lr is the grid
    lr with the lowest seed-mean loss at the narrowest width. Returns narrowest_width,
    transferred_log2_lr (NaN if every lr diverged there), transferred_lr, losses (width ->
    seed-mean loss at that lr: +inf if a seed diverged, None if not run) and
    wider_is_better (None when it cannot be told: one width, or the lr not run at some).
    """
    narrow = curves[0] if curves else None
    if narrow is None or not np.isfinite(narrow["mean"]).any():
        return {"narrowest_width": narrow and narrow["width"], "transferred_log2_lr": math.nan,
                "transferred_lr": math.nan, "losses": {}, "wider_is_better": None}  # fmt: skip
    x = float(narrow["log2_lr"][np.argmin(narrow["mean"])])  # +inf never wins here
    losses = {c["width"]: _loss_at(c, x) for c in curves}
    known = list(losses.values())
    if None in known or len(known) < 2:
        better = None
    else:  # strictly falling; a diverged (+inf) wider width fails it
        better = all(a > b for a, b in zip(known, known[1:]))
    return {"narrowest_width": narrow["width"], "transferred_log2_lr": x,
            "transferred_lr": 2.0**x, "losses": losses, "wider_is_better": better}  # fmt: skip


def _loss_at(curve: dict, log2_lr: float) -> float | None:
    # Exact equality is right here: one lr gives one float, and so one log2, at every width.
    hit = np.flatnonzero(curve["log2_lr"] == log2_lr)
    return float(curve["mean"][hit[0]]) if hit.size else None
