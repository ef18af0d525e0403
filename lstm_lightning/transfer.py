"""Learning-rate transfer, the math: best lrs, fitted optima, drift, wider-is-better, verdicts.

Pure functions of the run results (``result.json`` records, as ``results.read`` returns
them): no files, no figures. ``report`` writes what they compute; ``plots`` draws it.

The best learning rate (``best_lr_table``). For each (parametrization, optimizer, width,
seed) the best lr is the one whose completed run has the lowest final ``val/loss`` (on a
tie, the smaller lr). A diverged run counts as loss +inf, so it is never best; a failed
run has no loss and takes no part (``run_loss``). Over seeds the table gives the mean and
the population std (ddof=0) of log2(best lr) (2^-3 and 2^-5 give -4 ± 1), the lr 2^mean
and the best loss's mean ± std. muP's claim (TP5): log2(best lr) stays put as width grows.

Learning-rate transfer (``transfer_metrics``; the curve maths is in ``optima``). The grid
argmin moves in whole octaves, so per seed the best log2 lr is refined
(``fitted_optimum``): the vertex of the parabola through the argmin and its two
neighbours (in log2 lr, any spacing), clamped between those neighbours
(``parabola_vertex``). An argmin at the seed's first or last lr is an edge optimum (the
true one may lie outside the sweep) and, like an argmin beside a diverged run, keeps the
grid point. Per pair: the drift (``lr_drift``), the largest minus the smallest seed-mean
fitted log2 lr over widths (octaves); the transferred lr, the grid lr with the lowest
seed-mean loss at the narrowest width; and wider-is-better (``wider_is_better``), whether
at that lr the seed-mean loss falls strictly with width. Per optimizer the verdict
(``verdict``): muP transfers only if muP drift <= 1 (``MUP_DRIFT_MAX``), SP drift >= 2
(``SP_DRIFT_MIN``) and under muP wider is better; edge optima behind a drift make it a
lower bound, or uncertain.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

# The curve maths (``optima``), re-exported: the tests and users import it from here.
from lstm_lightning.optima import fitted_optimum as fitted_optimum
from lstm_lightning.optima import lr_drift as lr_drift
from lstm_lightning.optima import parabola_vertex as parabola_vertex
from lstm_lightning.optima import wider_is_better as wider_is_better

PARAM_ORDER = ("sp", "mup")
OPT_ORDER = ("sgd", "adam", "adamw")
NAMES = {"sp": "SP", "mup": "muP", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def run_loss(result: dict) -> float | None:
    """The loss that ranks a run: final val/loss, +inf if it diverged, None if it has none.

    A failed run, or a completed one that never logged val/loss, has no loss. A NaN or
    infinite val/loss counts as a divergence.
    """
    if result["status"] == "diverged":
        return math.inf
    loss = result["metrics"].get("val/loss")
    if result["status"] != "completed" or loss is None:
        return None
    return float(loss) if math.isfinite(loss) else math.inf


def panel_order(key: tuple[str, str]) -> tuple:
    """Sort key of a (parametrization, optimizer) pair: sp before mup, sgd before adam."""
    param, opt = key
    return (rank(param, PARAM_ORDER), rank(opt, OPT_ORDER))


def rank(name: str, order: tuple[str, ...]) -> tuple[int, str]:
    # Names this module does not know sort after the known ones, alphabetically.
    return (order.index(name) if name in order else len(order), name)


def pair_of(result: dict) -> tuple[str, str]:
    return (result["hparams"]["parametrization"], result["hparams"]["optimizer"])


def panels(results: Iterable[dict]) -> list[tuple[str, str]]:
    """The (parametrization, optimizer) pairs present, in plot order."""
    return sorted({pair_of(r) for r in results}, key=panel_order)


def _losses_by_width(results: Iterable[dict]) -> dict[tuple, list[tuple]]:
    """(parametrization, optimizer, width) -> [(seed, learning_rate, loss)] of ranked runs."""
    grouped = defaultdict(list)
    for r in results:
        loss = run_loss(r)
        if loss is not None:
            h = r["hparams"]
            grouped[(*pair_of(r), h["hidden_size"])].append((h["seed"], h["learning_rate"], loss))
    return dict(sorted(grouped.items(), key=lambda kv: (panel_order(kv[0][:2]), kv[0][2])))


def best_lr_table(results: Iterable[dict]) -> list[dict]:
    """The best learning rate at each width, one dict per (parametrization, optimizer, width).

    Keys: parametrization, optimizer, width, best_log2_lr_mean, best_log2_lr_std (the
    population std over seeds), best_lr (2 ** best_log2_lr_mean), best_loss_mean,
    best_loss_std and n_seeds. A seed whose every lr diverged has no best lr and is not
    counted; when no seed has one, the numbers are NaN and n_seeds is 0. Sorted in plot
    order, then by width.
    """
    rows = []
    for (param, opt, width), runs in _losses_by_width(results).items():
        by_seed = defaultdict(list)
        for seed, lr, loss in runs:
            by_seed[seed].append((loss, lr))
        # min over (loss, lr): the lowest loss wins; on a tie, the smaller lr.
        best = [min(candidates) for candidates in by_seed.values()]
        best = np.array([(loss, lr) for loss, lr in best if math.isfinite(loss)]).reshape(-1, 2)
        row = {"parametrization": param, "optimizer": opt, "width": width}
        rows.append({**row, **_seed_stats(np.log2(best[:, 1]), best[:, 0])})
    return rows


def _seed_stats(log2_lr: np.ndarray, loss: np.ndarray) -> dict:
    """Mean and population std over seeds of log2(best lr) (S,) and best loss (S,)."""
    n = len(log2_lr)
    if n == 0:
        keys = ("best_log2_lr_mean", "best_log2_lr_std", "best_lr", "best_loss_mean")
        return {**dict.fromkeys(keys, math.nan), "best_loss_std": math.nan, "n_seeds": 0}
    mean = float(log2_lr.mean())
    return dict(
        best_log2_lr_mean=mean,
        best_log2_lr_std=float(log2_lr.std()),  # ddof=0: the seeds we ran, not a sample estimate
        best_lr=2.0**mean,
        best_loss_mean=float(loss.mean()),
        best_loss_std=float(loss.std()),
        n_seeds=n,
    )


def transfer_curves(results: Iterable[dict]) -> dict[tuple[str, str], list[dict]]:
    """Per (parametrization, optimizer), in plot order: one curve per width, by width.

    A curve has ``width``, ``log2_lr`` (L,) ascending, and per lr ``mean``, ``lo``, ``hi``
    (L,): the mean, min and max final val/loss over seeds, ``n_seeds`` (L,) and
    ``diverged`` (L,): whether some seed diverged there (then ``mean`` is +inf). A pair
    whose every run failed has no curves.
    """
    results = list(results)
    curves = {key: [] for key in panels(results)}
    for (param, opt, width), runs in _losses_by_width(results).items():
        curves[(param, opt)].append(_curve(width, runs))
    return curves


def _curve(width: int, runs: list[tuple]) -> dict:
    """One width's curve from its (seed, learning_rate, loss) runs."""
    by_lr = defaultdict(list)
    for _, lr, loss in runs:
        by_lr[lr].append(loss)
    lrs = sorted(by_lr)
    losses = [np.array(by_lr[lr]) for lr in lrs]  # L arrays of (seeds at that lr,)
    return {
        "width": width,
        "log2_lr": np.log2(lrs),
        "mean": np.array([x.mean() for x in losses]),
        "lo": np.array([x.min() for x in losses]),
        "hi": np.array([x.max() for x in losses]),
        "n_seeds": np.array([len(x) for x in losses]),
        "diverged": np.array([bool(np.isinf(x).any()) for x in losses]),
    }


# --- learning-rate transfer ----------------------------------------------------------

MUP_DRIFT_MAX = 1.0  # octaves: muP's fitted best lr may move at most this much over widths
SP_DRIFT_MIN = 2.0  # octaves: SP's must move at least this much for the contrast to show


def fitted_best_lr_table(results: Iterable[dict]) -> list[dict]:
    """The fitted best lr at each width, one dict per (parametrization, optimizer, width).

    Per seed, ``fitted_optimum`` of its loss curve: its completed and diverged runs (a
    failed run at the sweep's end moves that seed's edge inward; repeated runs of one lr
    are averaged). Keys: parametrization, optimizer, width, fitted_log2_lr_mean,
    fitted_log2_lr_std (population, over seeds), fitted_lr (2 ** mean), n_seeds (those
    with a best lr), edge_low and edge_high (seeds whose optimum is at that edge), edge
    (either is nonzero) and seeds (per seed: seed and its ``fitted_optimum``, or None).
    """
    rows = []
    for (param, opt, width), runs in _losses_by_width(results).items():
        seeds = []
        for seed in dict.fromkeys(s for s, _, _ in runs):  # in path order, once each
            c = _curve(width, [run for run in runs if run[0] == seed])
            seeds.append({"seed": seed, "optimum": fitted_optimum(c["log2_lr"], c["mean"])})
        row = {"parametrization": param, "optimizer": opt, "width": width}
        rows.append({**row, **_fitted_stats(seeds), "seeds": seeds})
    return rows


def _fitted_stats(seeds: list[dict]) -> dict:
    """Mean, population std and count of the seeds' fitted log2 lrs, and their edges."""
    optima = [s["optimum"] for s in seeds if s["optimum"] is not None]
    log2_lr = np.array([o["log2_lr"] for o in optima])  # (S,)
    mean = float(log2_lr.mean()) if optima else math.nan
    edges = Counter(side for o in optima for side in ("low", "high") if o["edge"] in (side, "both"))
    return dict(
        fitted_log2_lr_mean=mean,
        fitted_log2_lr_std=float(log2_lr.std()) if optima else math.nan,  # ddof=0
        fitted_lr=2.0**mean,
        n_seeds=len(optima),
        edge_low=edges["low"],
        edge_high=edges["high"],
        edge=bool(edges),
    )


def transfer_metrics(results: Iterable[dict]) -> dict:
    """Per pair its fitted best lrs, drift and wider-is-better; per optimizer a verdict.

    Returns ``panels``: per (parametrization, optimizer) in plot order, ``lr_drift`` and
    ``wider_is_better``'s keys but losses, plus ``widths``, its ``fitted_best_lr_table``
    rows, each with ``loss_at_transferred_lr`` (the loss there: +inf if diverged, None if
    not run) and ``diverged_at_transferred_lr``; and ``verdicts``: ``verdicts(panels)``.
    """
    results = list(results)
    rows = fitted_best_lr_table(results)
    out = []
    for (param, opt), curves in transfer_curves(results).items():
        pair = [r for r in rows if (r["parametrization"], r["optimizer"]) == (param, opt)]
        transfer = wider_is_better(curves)
        losses = transfer.pop("losses")
        for row in pair:
            loss = losses.get(row["width"])
            row["loss_at_transferred_lr"] = loss
            row["diverged_at_transferred_lr"] = loss == math.inf
        panel = {"parametrization": param, "optimizer": opt, **lr_drift(pair), **transfer}
        out.append({**panel, "widths": pair})
    return {"panels": out, "verdicts": verdicts(out)}


def verdicts(panels: list[dict]) -> list[dict]:
    """Per optimizer, in plot order: does muP transfer? (See ``verdict``.)"""
    by_pair = {(p["parametrization"], p["optimizer"]): p for p in panels}
    opts = sorted({opt for _, opt in by_pair}, key=lambda o: rank(o, OPT_ORDER))
    return [verdict(opt, by_pair.get(("mup", opt)), by_pair.get(("sp", opt))) for opt in opts]


def verdict(opt: str, mup: dict | None, sp: dict | None) -> dict:
    """The rule: muP transfers only if muP drift <= 1, SP drift >= 2 and, under muP, wider
    is better at the transferred lr. Returns optimizer, transfers, conditions (name,
    holds, text), notes (edge optima behind a drift) and text, a sentence saying it all.
    """
    conditions = [
        _drift_condition("muP", mup, MUP_DRIFT_MAX, at_most=True),
        _drift_condition("SP", sp, SP_DRIFT_MIN, at_most=False),
        _wider_condition(mup),
    ]
    transfers = all(c["holds"] for c in conditions)
    notes = [n for name, p in (("muP", mup), ("SP", sp)) if (n := _edge_note(name, p))]
    name = NAMES.get(opt, opt)
    if transfers:
        text = f"{name}: muP transfers: " + "; ".join(c["text"] for c in conditions) + "."
    else:
        failed = "; ".join(c["text"] for c in conditions if not c["holds"])
        held = "; ".join(c["text"] for c in conditions if c["holds"])
        # Only the SP condition failing means muP held its optimum but SP did not move
        # enough at these widths for the study to tell the two apart: not shown, not
        # refuted (widen the width range).
        only_sp = [c["name"] for c in conditions if not c["holds"]] == ["sp_drift"] and (
            sp is not None and not math.isnan(sp["drift"])
        )
        not_shown = "transfer not shown (SP barely drifts at these widths)"
        head = not_shown if only_sp else "muP does not transfer"
        text = f"{name}: {head}: {failed}." + (f" Held: {held}." if held else "")
    text += "".join(f" {n}" for n in notes)
    return {"optimizer": opt, "transfers": transfers, "conditions": conditions,
            "notes": notes, "text": text}  # fmt: skip


def _drift_condition(name: str, panel: dict | None, limit: float, *, at_most: bool) -> dict:
    """The condition that a pair's drift is at most (or at least) ``limit`` octaves."""
    key = f"{name.lower()}_drift"
    if panel is None:
        return {"name": key, "holds": False, "text": f"no {name} runs, so no {name} drift"}
    drift = panel["drift"]
    if math.isnan(drift):
        text = f"{name} drift not measured (fewer than two widths with a best lr)"
        return {"name": key, "holds": False, "text": text}
    rounded = round(drift, 9)  # float noise in a fit must not flip an exact 2.00 >= 2
    holds = rounded <= limit if at_most else rounded >= limit
    sign = ("<=" if holds else ">") if at_most else (">=" if holds else "<")
    text = f"{name} drift {drift:.2f} octaves {sign} {limit:g}"
    return {"name": key, "holds": holds, "text": text}


def _wider_condition(mup: dict | None) -> dict:
    key = "mup_wider_is_better"
    if mup is None:
        return {"name": key, "holds": False, "text": "no muP runs, so no wider-is-better"}
    better, x = mup["wider_is_better"], mup["transferred_log2_lr"]
    if math.isnan(x):
        text = f"under muP every lr diverged at the narrowest width {mup['narrowest_width']}"
        return {"name": key, "holds": False, "text": text}
    at = f"at the transferred lr {format_lr(2.0**x)} (best at width {mup['narrowest_width']})"
    losses = [f"{r['width']}: {loss_text(r['loss_at_transferred_lr'])}" for r in mup["widths"]]
    losses = ", ".join(losses)
    if better is None:
        text = f"under muP wider-is-better cannot be told {at}: losses {losses}"
    else:
        text = f"under muP wider is {'' if better else 'not '}better {at}: losses {losses}"
    return {"name": key, "holds": bool(better), "text": text}


def loss_text(loss: float | None) -> str:
    if loss is None:
        return "not run"
    return f"{loss:.4f}" if math.isfinite(loss) else "diverged"


def _edge_note(name: str, panel: dict | None) -> str | None:
    """A sentence on the edge optima behind a pair's drift, or None if there are none."""
    if panel is None or not panel["edge_widths"] or panel["drift_bound"] is None:
        return None
    rows = [r for r in panel["widths"] if r["edge"]]
    where = ", ".join(f"{r['width']} ({edge_text(r)})" for r in rows)
    if panel["drift_bound"] == "lower bound":
        return f"The {name} drift is a lower bound: optima at the grid edge at widths {where}."
    return f"The {name} drift may be off either way: optima at the grid edge at widths {where}."


def edge_text(row: dict) -> str:
    """``low 2/3, high 1/3``: how many of a width's seeds have their optimum at each edge."""
    n = row["n_seeds"]
    return ", ".join(f"{side} {row[f'edge_{side}']}/{n}" for side in ("low", "high")
                     if row[f"edge_{side}"]) or "—"  # fmt: skip


def format_lr(lr: float) -> str:
    """``2^-5`` for an exact power of two (a sweep's usual grid), else 3 digits."""
    log2 = math.log2(lr)
    return f"2^{int(log2)}" if log2 == int(log2) else f"{lr:.3g}"


def pair_name(key: dict | tuple[str, str]) -> str:
    """``SP, Adam``: a (parametrization, optimizer) pair, or a dict holding one, by name."""
    param, opt = (key["parametrization"], key["optimizer"]) if isinstance(key, dict) else key
    return f"{NAMES.get(param, param)}, {NAMES.get(opt, opt)}"
