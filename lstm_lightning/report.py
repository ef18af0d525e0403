"""The sweep report: what every run gave, and whether the best learning rate transferred.

``write_report(runs_dir)`` reads every ``result.json`` below ``runs_dir`` (the schema is
``docs/result_schema.md``) and writes four files, each atomically:

- ``results.csv``: one row per run, columns ``CSV_COLUMNS``, in path order.
- ``report.md``: per group, a table of its runs and a list of its diverged and failed
  runs; then, per (parametrization, optimizer), the best learning rate at each width;
  then the learning-rate transfer metrics and verdicts (below).
- ``transfer.png``: the transfer plot (below).
- ``transfer.json``: the transfer metrics, machine-readable (``docs/result_schema.md``).

``python cli.py report --runs_dir DIR`` runs ``main``: it writes them and prints the
best-lr table, the transfer table and the verdicts.

The best learning rate. For each (parametrization, optimizer, width, seed) the best lr
is the one whose completed run has the lowest final ``val/loss`` (on a tie, the smaller
lr). A diverged run counts as loss +inf, so it is never best; a failed run has no loss
and takes no part. Over seeds the table gives the mean and the population std (ddof=0)
of log2(best lr): best lrs 2^-3 and 2^-5 give -4 ± 1. It also gives the lr 2^mean and
the best loss's mean ± std. muP's claim (Tensor Programs V) is that log2(best lr) stays
put as width grows; under SP it drifts, usually towards smaller lrs for wider models.

Learning-rate transfer (``transfer_metrics``). The grid argmin moves in whole octaves, so
per seed the best log2 lr is refined: the vertex of the parabola through the argmin and
its two neighbours (in log2 lr, any spacing), clamped between those neighbours. An argmin
at the seed's first or last lr is an edge optimum (the true one may lie outside the
sweep) and, like an argmin beside a diverged run, keeps the grid point. Per pair: the
drift, the largest minus the smallest seed-mean fitted log2 lr over widths (octaves); the
transferred lr, the grid lr with the lowest seed-mean loss at the narrowest width; and
wider-is-better, whether at that lr the seed-mean loss falls strictly with width. Per
optimizer the verdict: muP transfers only if muP drift <= 1, SP drift >= 2 and under muP
wider is better; edge optima behind a drift make it a lower bound, or uncertain.

Reading the transfer plot. One panel per (parametrization, optimizer): SP on the left,
muP on the right, one row per optimizer. Each curve is one width, and darker means
wider. It plots the final ``val/loss`` (mean over seeds, shaded min to max over seeds)
against log2(learning rate), with a star at the curve's minimum. Under muP the stars
line up vertically and the wider curves sit lower at every lr; under SP the stars move
as width grows. A tick along the panel's foot marks each width's fitted best lr. The
y-axis stops at a robust top (the dashed line; see ``y_limits``) so that one huge loss
does not flatten every curve: an open triangle on the dashed line is a loss clipped
there. An ``x`` above the line is an lr at which a seed of that width
diverged (a seed that diverged makes the mean +inf, so the curve breaks there).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lstm_lightning.errors import ConfigError
from lstm_lightning.files import write_atomic
from lstm_lightning.results import FIELDS, FILE, HPARAMS, METRICS, OBJ, STATUSES, ResultError
from lstm_lightning.results import read as read_result

PARAM_ORDER = ("sp", "mup")
OPT_ORDER = ("sgd", "adam", "adamw")
NAMES = {"sp": "SP", "mup": "muP", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
TRANSFER_SCHEMA = 1  # transfer.json's schema version

# results.csv: every field of the result schema that holds a value, hparams and metrics
# spread into a column each ("val/loss" -> "val_loss").
_METRIC_COLUMNS = {name.replace("/", "_"): name for name in METRICS}
_TOP_COLUMNS = tuple(
    key
    for key, (types, _) in FIELDS.items()
    if OBJ not in types and key not in ("schema", "group", "label", "status")
)
CSV_COLUMNS = ("group", "label", "status", *HPARAMS, *_METRIC_COLUMNS, *_TOP_COLUMNS)

# What write_report writes, in order: the file name is the key with "_" -> ".".
OUTPUTS = ("results_csv", "report_md", "transfer_png", "transfer_json")

DPI = 120
PANEL_SIZE = (5.0, 3.8)  # inches per panel: (width, height)


# --- reading --------------------------------------------------------------------------


def load_results(runs_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Every readable ``result.json`` below ``runs_dir``, sorted by path, and warnings.

    A file that cannot be read or breaks the schema is skipped, and one warning line names
    it and its problem. Each result gains ``"path"``, its file. Raises ``ConfigError`` (a
    ``ValueError``) when the directory holds no result.json at all.
    """
    root = Path(runs_dir)
    paths = sorted(root.rglob(FILE)) if root.is_dir() else []
    if not paths:
        raise ConfigError(
            f"no result.json found below {root}; run `python cli.py sweep --runs_dir {root}` first"
        )
    found, warnings = [], []
    for path in paths:
        try:
            found.append({**read_result(path), "path": str(path)})
        except ResultError as err:
            warnings.append(f"skipped {path}: {err}")
    return found, warnings


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- analysis -------------------------------------------------------------------------


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
    return (_rank(param, PARAM_ORDER), _rank(opt, OPT_ORDER))


def _rank(name: str, order: tuple[str, ...]) -> tuple[int, str]:
    # Names this module does not know sort after the known ones, alphabetically.
    return (order.index(name) if name in order else len(order), name)


def _panel(result: dict) -> tuple[str, str]:
    return (result["hparams"]["parametrization"], result["hparams"]["optimizer"])


def panels(results: Iterable[dict]) -> list[tuple[str, str]]:
    """The (parametrization, optimizer) pairs present, in plot order."""
    return sorted({_panel(r) for r in results}, key=panel_order)


def _losses_by_width(results: Iterable[dict]) -> dict[tuple, list[tuple]]:
    """(parametrization, optimizer, width) -> [(seed, learning_rate, loss)] of ranked runs."""
    grouped = defaultdict(list)
    for r in results:
        loss = run_loss(r)
        if loss is not None:
            h = r["hparams"]
            grouped[(*_panel(r), h["hidden_size"])].append((h["seed"], h["learning_rate"], loss))
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


def status_counts(results: Iterable[dict]) -> Counter:
    """Runs per status: completed, diverged, failed."""
    return Counter(r["status"] for r in results)


# --- learning-rate transfer -----------------------------------------------------------

MUP_DRIFT_MAX = 1.0  # octaves: muP's fitted best lr may move at most this much over widths
SP_DRIFT_MIN = 2.0  # octaves: SP's must move at least this much for the contrast to show


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
    optimum may lie outside the sweep, else None. An edge argmin, or a diverged neighbour, keeps the grid
    point: nothing is extrapolated.
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
    opts = sorted({opt for _, opt in by_pair}, key=lambda o: _rank(o, OPT_ORDER))
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
        head = (
            "transfer not shown (SP barely drifts at these widths)"
            if only_sp
            else ("muP does not transfer")
        )
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
    losses = ", ".join(
        f"{r['width']}: {_loss_text(r['loss_at_transferred_lr'])}" for r in mup["widths"]
    )
    if better is None:
        text = f"under muP wider-is-better cannot be told {at}: losses {losses}"
    else:
        text = f"under muP wider is {'' if better else 'not '}better {at}: losses {losses}"
    return {"name": key, "holds": bool(better), "text": text}


def _loss_text(loss: float | None) -> str:
    if loss is None:
        return "not run"
    return f"{loss:.4f}" if math.isfinite(loss) else "diverged"


def _edge_note(name: str, panel: dict | None) -> str | None:
    """A sentence on the edge optima behind a pair's drift, or None if there are none."""
    if panel is None or not panel["edge_widths"] or panel["drift_bound"] is None:
        return None
    rows = [r for r in panel["widths"] if r["edge"]]
    where = ", ".join(f"{r['width']} ({_edge_text(r)})" for r in rows)
    if panel["drift_bound"] == "lower bound":
        return f"The {name} drift is a lower bound: optima at the grid edge at widths {where}."
    return f"The {name} drift may be off either way: optima at the grid edge at widths {where}."


def _edge_text(row: dict) -> str:
    """``low 2/3, high 1/3``: how many of a width's seeds have their optimum at each edge."""
    n = row["n_seeds"]
    return ", ".join(f"{side} {row[f'edge_{side}']}/{n}" for side in ("low", "high")
                     if row[f"edge_{side}"]) or "—"  # fmt: skip


# --- text -----------------------------------------------------------------------------


def format_csv(results: Iterable[dict]) -> str:
    """``results.csv``: the header ``CSV_COLUMNS``, then one row per run; null is empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        metrics = {column: r["metrics"].get(key) for column, key in _METRIC_COLUMNS.items()}
        values = {**{key: r.get(key) for key in _TOP_COLUMNS}, **r["hparams"], **metrics}
        values.update(group=r["group"], label=r["label"], status=r["status"])
        writer.writerow(["" if values.get(c) is None else values[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def summary_line(results: list[dict], skipped: int = 0) -> str:
    """``N runs: C completed, D diverged, F failed.``, plus how many files were skipped."""
    counts = status_counts(results)
    line = f"{len(results)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + "."
    if skipped:
        line += f" Skipped {skipped} unreadable result.json (see the warnings)."
    return line


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded to aligned columns, so it also reads as plain text."""
    cells = [[_escape(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _escape(cell: str) -> str:
    # A "|" or a newline inside a cell would break the table's row.
    return str(cell).replace("|", "\\|").replace("\n", " ")


BEST_LR_HEADER = ["width", "best lr", "log2 best lr", "best val/loss", "seeds"]


def best_lr_cells(row: dict) -> list[str]:
    """A best-lr table row as text: width, 2^mean, log2 mean ± std, loss mean ± std, n."""
    if row["n_seeds"] == 0:
        return [str(row["width"]), "—", "—", "every lr diverged", "0"]
    return [
        str(row["width"]),
        f"{row['best_lr']:.3g}",
        f"{row['best_log2_lr_mean']:.2f} ± {row['best_log2_lr_std']:.2f}",
        f"{row['best_loss_mean']:.4f} ± {row['best_loss_std']:.4f}",
        str(row["n_seeds"]),
    ]


def format_table(results: list[dict], rows: list[dict] | None = None, skipped: int = 0) -> str:
    """What the CLI prints: the summary line and the best-lr table of every pair.

    ``rows`` defaults to ``best_lr_table(results)``; ``skipped`` is the number of
    result.json files that ``load_results`` skipped.
    """
    rows = best_lr_table(results) if rows is None else rows
    header = ["parametrization", "optimizer", *BEST_LR_HEADER]
    body = [[row["parametrization"], row["optimizer"], *best_lr_cells(row)] for row in rows]
    return summary_line(results, skipped) + "\n\n" + markdown_table(header, body)


def _fmt(value: object, spec: str) -> str:
    """``value`` formatted by ``spec``, an em dash for null, as-is if not a number."""
    if value is None:
        return "—"
    return format(value, spec) if _is_number(value) else str(value)


def format_lr(lr: float) -> str:
    """``2^-5`` for an exact power of two (a sweep's usual grid), else 3 digits."""
    log2 = math.log2(lr)
    return f"2^{int(log2)}" if log2 == int(log2) else f"{lr:.3g}"


GROUP_HEADER = ["label", "status", "width", "lr", "seed", "val/loss", "best val/loss"]
GROUP_HEADER += ["floor", "steps", "tok/s", "wall s"]


def _run_cells(r: dict) -> list[str]:
    h, m = r["hparams"], r["metrics"]
    return [
        r["label"], r["status"], str(h["hidden_size"]), format_lr(h["learning_rate"]),
        str(h["seed"]), _fmt(m.get("val/loss"), ".4f"), _fmt(m.get("val/loss_best"), ".4f"),
        _fmt(m.get("val/loss_floor"), ".4f"), _fmt(r.get("steps"), ".0f"),
        _fmt(r.get("tokens_per_second"), ",.0f"), _fmt(r.get("wall_seconds"), ".1f"),
    ]  # fmt: skip


def _run_order(r: dict) -> tuple:
    h = r["hparams"]
    seed = h["seed"]  # numbers in numeric order; anything else after them, as text
    seed_key = (0, seed, "") if _is_number(seed) else (1, 0, str(seed))
    return (panel_order(_panel(r)), h["hidden_size"], h["learning_rate"], seed_key, r["label"])


def group_section(group: str, runs: list[dict]) -> list[str]:
    """Markdown lines for one group: counts, its runs' table, its diverged and failed runs."""
    runs = sorted(runs, key=_run_order)
    lines = [f"### {group}", "", summary_line(runs), ""]
    lines += [markdown_table(GROUP_HEADER, [_run_cells(r) for r in runs]), ""]
    notes = [_problem_line(r) for r in runs if r["status"] != "completed"]
    return lines + (notes + [""] if notes else [])


def _problem_line(r: dict) -> str:
    """A Markdown bullet for a diverged or failed run: where it diverged, how its worker
    died, or its error."""
    if r["status"] == "diverged":
        return f"- diverged: `{r['label']}` at step {_fmt(r.get('diverged_at_step'), '.0f')}"
    if r.get("worker_death"):
        return f"- failed (worker death): `{r['label']}`: {r['worker_death']}"
    return f"- failed: `{r['label']}`: {r.get('error') or 'no error recorded'}"


def format_markdown(
    results: list[dict],
    rows: list[dict],
    warnings: list[str],
    runs_dir: str | os.PathLike,
    metrics: dict | None = None,
) -> str:
    """``report.md``: the summary, each group's runs, the best lr per pair and width, then
    learning-rate transfer (``metrics`` defaults to ``transfer_metrics(results)``)."""
    lines = [f"# Sweep report: `{runs_dir}`", "", summary_line(results, len(warnings)), ""]
    lines += [f"- {w}" for w in warnings] + ([""] if warnings else [])
    lines += ["## Runs by group", ""]
    groups = defaultdict(list)
    for r in results:
        groups[r["group"]].append(r)
    for group in sorted(groups):
        lines += group_section(group, groups[group])
    lines += ["## Best learning rate per width", "", _BEST_LR_NOTE, ""]
    for param, opt in panels(results):
        pair = [row for row in rows if (row["parametrization"], row["optimizer"]) == (param, opt)]
        body = [best_lr_cells(row) for row in pair] or [["—", "—", "—", "no completed run", "0"]]
        lines += [f"### {pair_name((param, opt))}", ""]
        lines += [markdown_table(BEST_LR_HEADER, body), ""]
    lines += transfer_section(transfer_metrics(results) if metrics is None else metrics)
    return "\n".join(lines)


_BEST_LR_NOTE = (
    "Per seed, the best lr is the one with the lowest final val/loss among completed runs "
    "(a diverged run counts as +inf). Across seeds: the lr 2^mean, the mean ± population std "
    "of log2(best lr), and the best loss's mean ± std. Under muP, log2 best lr should stay "
    "put as width grows; under SP it drifts."
)


TRANSFER_HEADER = ["panel", "width", "fitted log2 best lr", "seeds", "edge"]
TRANSFER_HEADER += ["loss at transferred lr"]


def transfer_lines(metrics: dict) -> list[str]:
    """``transfer_metrics`` as Markdown that reads as plain text too: a row per pair and
    width, a line per pair (drift, transferred lr, wider is better), a verdict per optimizer.
    """
    body = [_transfer_cells(p, row) for p in metrics["panels"] for row in p["widths"]]
    lines = [markdown_table(TRANSFER_HEADER, body), ""] if body else []
    lines += [f"- {_panel_line(p)}" for p in metrics["panels"]]
    lines += ["", _VERDICT_RULE, ""] + [f"- {v['text']}" for v in metrics["verdicts"]]
    return lines


def _transfer_cells(panel: dict, row: dict) -> list[str]:
    mean, std = row["fitted_log2_lr_mean"], row["fitted_log2_lr_std"]
    fitted = f"{mean:.2f} ± {std:.2f}" if row["n_seeds"] else "every lr diverged"
    loss = _loss_text(row["loss_at_transferred_lr"])
    return [pair_name(panel), str(row["width"]), fitted, str(row["n_seeds"]), _edge_text(row), loss]


def _panel_line(p: dict) -> str:
    """``SP, Adam: drift 2.50 octaves (lower bound); transferred lr 2^-5 ...: yes``."""
    drift = "drift not measured" if math.isnan(p["drift"]) else f"drift {p['drift']:.2f} octaves"
    if p["drift_bound"] not in (None, "measured"):
        drift += f" ({p['drift_bound']}: edge optima at widths {_ints(p['edge_widths'])})"
    x, narrow = p["transferred_log2_lr"], p["narrowest_width"]
    if math.isnan(x):
        return f"{pair_name(p)}: {drift}; no transferred lr: every lr diverged at width {narrow}"
    better = {True: "yes", False: "no", None: "cannot tell"}[p["wider_is_better"]]
    transferred = f"transferred lr {format_lr(2.0**x)} (best at width {narrow})"
    return f"{pair_name(p)}: {drift}; {transferred}; wider is better there: {better}"


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values)


def pair_name(key: dict | tuple[str, str]) -> str:
    """``SP, Adam``: a (parametrization, optimizer) pair, or a dict holding one, by name."""
    param, opt = (key["parametrization"], key["optimizer"]) if isinstance(key, dict) else key
    return f"{NAMES.get(param, param)}, {NAMES.get(opt, opt)}"


_VERDICT_RULE = (
    f"Verdicts (muP transfers only if muP drift <= {MUP_DRIFT_MAX:g} octave, SP drift >= "
    f"{SP_DRIFT_MIN:g} octaves, and under muP wider is better at the transferred lr):"
)

_TRANSFER_NOTE = (
    "Per seed, the best log2 lr is the vertex of the parabola through the grid argmin of "
    "final val/loss and its two neighbours, clamped between them; at the sweep's first or "
    "last lr (an edge: the true optimum may lie outside the sweep), or beside a diverged "
    "run, it is the grid point. Per width: the mean ± population std over seeds, and the "
    "seeds at each edge. Drift: the largest minus the smallest of those means over widths, "
    "in octaves. The transferred lr is the grid lr with the lowest seed-mean loss at the "
    "narrowest width; wider is better when, at it, the seed-mean loss falls strictly with "
    "width. The same numbers are in `transfer.json`."
)


def transfer_section(metrics: dict) -> list[str]:
    """report.md's "Learning-rate transfer" section."""
    return ["## Learning-rate transfer", "", _TRANSFER_NOTE, "", *transfer_lines(metrics), ""]


def transfer_json(metrics: dict, runs_dir: str | os.PathLike) -> str:
    """``transfer.json``: ``transfer_metrics`` as strict JSON (NaN and +inf become null)."""
    rule = {"mup_drift_max": MUP_DRIFT_MAX, "sp_drift_min": SP_DRIFT_MIN}
    doc = {"schema": TRANSFER_SCHEMA, "runs_dir": str(runs_dir), "rule": rule, **metrics}
    return json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n"


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- plot -----------------------------------------------------------------------------


def plot_transfer(results: list[dict], out: str | os.PathLike | BinaryIO) -> list[dict]:
    """Draw the transfer plot as a PNG into ``out``; return one metadata dict per panel.

    Panels sit in a grid: one column per parametrization, one row per optimizer, and a
    cell with no runs is left out. Metadata, in plot order: parametrization, optimizer,
    widths, ylim, clipped (points drawn on the clip line), diverged (``x`` markers) and
    fitted (width -> the seed-mean fitted best log2 lr, a tick along the panel's foot).
    """
    curves = transfer_curves(results)
    for row in fitted_best_lr_table(results):
        for c in curves[(row["parametrization"], row["optimizer"])]:
            if c["width"] == row["width"]:
                c["fitted_log2_lr"] = row["fitted_log2_lr_mean"]
    params = sorted({p for p, _ in curves}, key=lambda p: _rank(p, PARAM_ORDER))
    opts = sorted({o for _, o in curves}, key=lambda o: _rank(o, OPT_ORDER))
    widths = sorted({c["width"] for cs in curves.values() for c in cs})
    colors = width_colors(widths)
    size = (PANEL_SIZE[0] * len(params) + 1.0, PANEL_SIZE[1] * len(opts))  # + 1 in: legend
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws off-screen: no display needed
    grid = fig.subplots(len(opts), len(params), squeeze=False)  # (rows, cols) of Axes
    meta = []
    for i, opt in enumerate(opts):
        for j, param in enumerate(params):
            if (param, opt) in curves:
                meta.append(_draw_panel(grid[i, j], (param, opt), curves[(param, opt)], colors))
            else:
                fig.delaxes(grid[i, j])
    _legend(fig, colors)
    fig.savefig(out, format="png", dpi=DPI)
    return sorted(meta, key=lambda m: panel_order((m["parametrization"], m["optimizer"])))


def width_colors(widths: list[int]) -> dict[int, tuple]:
    """A sequential colour per width, wider = darker, evenly spaced in rank.

    Rank spacing is log-width spacing for the usual doubling sweep. The colormap's palest
    end is skipped so that the narrowest curve still shows on white.
    """
    cmap = colormaps["viridis_r"]
    steps = max(len(widths) - 1, 1)
    return {w: cmap(0.15 + 0.85 * i / steps) for i, w in enumerate(widths)}


def y_limits(curves: list[dict]) -> tuple[float, float]:
    """(low, top) of a panel's data area; ``top`` is robust to a few huge losses.

    ``top`` is the highest mean loss at most 1.5x as far above the lowest loss as the 90th
    percentile is: an outlier beyond that clips, and with no outlier nothing does.
    """
    means = np.concatenate([c["mean"] for c in curves])  # (P,) all points of the panel
    lows = np.concatenate([c["lo"] for c in curves])  # (P,)
    finite = means[np.isfinite(means)]
    if finite.size == 0:
        return 0.0, 1.0  # every point diverged: only the x markers show
    low = float(lows[np.isfinite(lows)].min())
    limit = low + 1.5 * (float(np.quantile(finite, 0.9)) - low)
    top = float(finite[finite <= limit].max())
    # A flat panel (or one point) still needs some height.
    return low, max(top, low + max(0.02 * abs(low), 0.05))


def _draw_panel(ax: Axes, key: tuple[str, str], curves: list[dict], colors: dict) -> dict:
    """One (parametrization, optimizer) panel; return its metadata."""
    param, opt = key
    ax.set_title(pair_name(key))
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("final val/loss (nats/token)")
    ax.grid(alpha=0.3)
    meta = {"parametrization": param, "optimizer": opt, "widths": [c["width"] for c in curves]}
    if not curves:
        ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center")
        return {**meta, "ylim": None, "clipped": 0, "diverged": 0, "fitted": {}}
    low, top = y_limits(curves)
    span = top - low
    ax.set_ylim(low - 0.12 * span, top + 0.15 * span)  # strips: fitted ticks, x markers
    ax.axhline(top, color="0.6", ls="--", lw=0.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    counts = np.array([_draw_curve(ax, c, colors, top, span) for c in curves])  # (W, 2)
    clipped, diverged = counts.sum(axis=0).tolist()
    fitted = {c["width"]: c["fitted_log2_lr"] for c in curves}
    return {**meta, "ylim": (low, top), "clipped": clipped, "diverged": diverged, "fitted": fitted}


def _draw_curve(ax: Axes, c: dict, colors: dict, top: float, span: float) -> tuple[int, int]:
    """One width's curve, band, best star, fitted tick and clip/divergence marks; return
    the counts of clipped and diverged points."""
    color, x, mean, diverged = colors[c["width"]], c["log2_lr"], c["mean"], c["diverged"]
    ax.plot(x, np.where(diverged, np.nan, np.minimum(mean, top)), "-o", color=color, ms=3, lw=1.5)
    band = (c["n_seeds"] > 1) & ~diverged
    if band.any():
        lo, hi = np.minimum(c["lo"], top), np.minimum(c["hi"], top)
        ax.fill_between(x, lo, hi, where=band, color=color, alpha=0.2, lw=0)
    clipped = ~diverged & (mean > top)
    ax.plot(x[clipped], np.full(clipped.sum(), top), "^", color=color, mfc="white", ms=7)
    # Each width's x sits at its own height in the strip above the clip line, so that
    # widths diverging at the same lr do not hide one another.
    rank = sorted(colors).index(c["width"]) / max(len(colors) - 1, 1)
    strip_y = np.full(diverged.sum(), top + span * (0.03 + 0.09 * rank))  # (D,)
    ax.plot(x[diverged], strip_y, "x", color=color, ms=7, mew=1.8)
    if np.isfinite(mean).any():
        best = np.nanargmin(np.where(np.isfinite(mean), mean, np.nan))
        ax.plot(x[best], min(mean[best], top), "*", color=color, mec="black", mew=0.6, ms=12)
    if math.isfinite(c["fitted_log2_lr"]):  # in the strip below the lowest loss
        foot = ax.get_xaxis_transform()  # x in data, y in axes fractions
        ax.plot(c["fitted_log2_lr"], 0.04, "|", color=color, ms=10, mew=2, transform=foot)
    return int(clipped.sum()), int(diverged.sum())


def _legend(fig: Figure, colors: dict) -> None:
    """One legend for the figure: the widths, then what the markers mean."""
    handles = [
        Line2D([], [], color=col, marker="o", ms=3, label=str(w)) for w, col in colors.items()
    ]
    handles += [
        Line2D([], [], ls="", marker="*", color="0.5", mec="black", ms=10, label="best lr"),
        Line2D([], [], ls="", marker="|", color="0.3", ms=10, mew=2, label="fitted best lr"),
        Line2D([], [], ls="", marker="^", color="0.3", mfc="white", ms=7, label="clipped"),
        Line2D([], [], ls="", marker="x", color="0.3", ms=7, mew=1.8, label="diverged"),
    ]
    fig.legend(handles=handles, title="width", loc="outside right upper", fontsize="small")


# --- writing --------------------------------------------------------------------------


def write_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Write results.csv, report.md, transfer.png and transfer.json into ``out_dir``
    (default runs_dir).

    Returns ``results_csv``, ``report_md``, ``transfer_png``, ``transfer_json`` (paths),
    ``table`` (the best-lr text the CLI prints), ``transfer`` (``transfer_metrics``),
    ``transfer_text`` (its text, which the CLI prints next), ``warnings`` (one line per
    skipped result.json; the CLI prints them) and ``panels`` (the plot's per-panel
    metadata). Raises ``ConfigError`` when there is no result.json, or none is readable.
    """
    results, warnings = load_results(runs_dir)
    if not results:
        raise ConfigError(
            f"no readable result.json below {runs_dir}: all {len(warnings)} were skipped; "
            f"the first: {warnings[0]}"
        )
    out = Path(runs_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, metrics = best_lr_table(results), transfer_metrics(results)
    paths = {name: out / name.replace("_", ".") for name in OUTPUTS}
    write_atomic(paths["results_csv"], format_csv(results))
    write_atomic(paths["report_md"], format_markdown(results, rows, warnings, runs_dir, metrics))
    png = io.BytesIO()  # drawn in memory, so a failed plot leaves the old file as it was
    panel_meta = plot_transfer(results, png)
    write_atomic(paths["transfer_png"], png.getvalue())
    write_atomic(paths["transfer_json"], transfer_json(metrics, runs_dir))
    table = format_table(results, rows, skipped=len(warnings))
    text = "\n".join(["Learning-rate transfer", "", *transfer_lines(metrics)])
    return {**paths, "table": table, "transfer": metrics, "transfer_text": text,
            "warnings": warnings, "panels": panel_meta}  # fmt: skip


def main(*, runs_dir: str = "runs", out_dir: str | None = None) -> int:
    """Summarise a sweep: write the report's four files, print best lrs and transfer verdicts.

    The files: results.csv, report.md, transfer.png and transfer.json.

    Args:
        runs_dir: The sweep's folder: every result.json below it is read.
        out_dir: Where the four files go; default: runs_dir.
    """
    out = write_report(runs_dir, out_dir)
    for line in out["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(out["table"])
    print("\n" + out["transfer_text"])
    written = ", ".join(str(out[key]) for key in OUTPUTS)
    print(f"\nwrote {written}")
    return 0
