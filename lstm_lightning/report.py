"""The sweep report: what every run gave, and whether the best learning rate transferred.

``write_report(runs_dir)`` reads every ``result.json`` below ``runs_dir`` (the schema is
``docs/result_schema.md``) and writes three files, each atomically:

- ``results.csv``: one row per run, columns ``CSV_COLUMNS``, in path order.
- ``report.md``: per group, a table of its runs and a list of its diverged and failed
  runs; then, per (parametrization, optimizer), the best learning rate at each width.
- ``transfer.png``: the transfer plot (below).

``python cli.py report --runs_dir DIR`` runs ``main``: it writes them and prints the
best-lr table.

The best learning rate. For each (parametrization, optimizer, width, seed) the best lr
is the one whose completed run has the lowest final ``val/loss`` (on a tie, the smaller
lr). A diverged run counts as loss +inf, so it is never best; a failed run has no loss
and takes no part. Over seeds the table gives the mean and the population std (ddof=0)
of log2(best lr): best lrs 2^-3 and 2^-5 give -4 ± 1. It also gives the lr 2^mean and
the best loss's mean ± std. muP's claim (Tensor Programs V) is that log2(best lr) stays
put as width grows; under SP it drifts, usually towards smaller lrs for wider models.

Reading the transfer plot. One panel per (parametrization, optimizer): SP on the left,
muP on the right, one row per optimizer. Each curve is one width, and darker means
wider. It plots the final ``val/loss`` (mean over seeds, shaded min to max over seeds)
against log2(learning rate), with a star at the curve's minimum. Under muP the stars
line up vertically and the wider curves sit lower at every lr; under SP the stars move
as width grows. The y-axis stops at a robust top (the dashed line; see ``y_limits``) so
that one huge loss does not flatten every curve: an open triangle on the dashed line is
a loss clipped there. An ``x`` above the line is an lr at which a seed of that width
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
from collections.abc import Iterable
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

SCHEMA = 1
STATUSES = ("completed", "diverged", "failed")
PARAM_ORDER = ("sp", "mup")
OPT_ORDER = ("sgd", "adam", "adamw")
NAMES = {"sp": "SP", "mup": "muP", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
REQUIRED_HPARAMS = ("parametrization", "optimizer", "hidden_size", "learning_rate", "seed")

# results.csv: each column, and the section of result.json that it comes from.
_HPARAM_COLUMNS = (
    *("parametrization", "optimizer", "hidden_size", "learning_rate", "seed"),
    *("num_layers", "batch_size", "seq_len", "max_steps"),
)
_METRIC_COLUMNS = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "val_loss_best": "val/loss_best",
    "val_loss_floor": "val/loss_floor",
}
_TOP_COLUMNS = ("steps", "tokens_per_second", "wall_seconds", "diverged_at_step", "world_size")
CSV_COLUMNS = ("group", "label", "status", *_HPARAM_COLUMNS, *_METRIC_COLUMNS, *_TOP_COLUMNS)

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
    paths = sorted(root.rglob("result.json")) if root.is_dir() else []
    if not paths:
        raise ConfigError(
            f"no result.json found below {root}; run `python cli.py sweep --runs_dir {root}` first"
        )
    results, warnings = [], []
    for path in paths:
        try:
            results.append({**_read_result(path), "path": str(path)})
        except ValueError as err:
            warnings.append(f"skipped {path}: {err}")
    return results, warnings


def _read_result(path: Path) -> dict:
    """Parse and check one result.json; raise ``ValueError`` saying what is wrong."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read it ({err.strerror or err})") from err
    except ValueError as err:  # JSONDecodeError or UnicodeDecodeError
        raise ValueError(f"not valid UTF-8 JSON ({err})") from err
    _check_result(result)
    return result


def _check_result(result: object) -> None:
    """Raise ``ValueError`` unless ``result`` has every field the report relies on."""
    if not isinstance(result, dict):
        raise ValueError(f"expected a JSON object, got a {type(result).__name__}")
    if result.get("schema") != SCHEMA:
        raise ValueError(f"schema is {result.get('schema')!r}; this report reads schema {SCHEMA}")
    for key in ("group", "label"):
        if not isinstance(result.get(key), str):
            raise ValueError(f"{key} is missing or not a string")
    if result.get("status") not in STATUSES:
        raise ValueError(f"status {result.get('status')!r} is not one of {', '.join(STATUSES)}")
    hparams, metrics = result.get("hparams"), result.get("metrics")
    if not isinstance(hparams, dict) or not isinstance(metrics, dict):
        raise ValueError("hparams and metrics must both be JSON objects")
    missing = [key for key in REQUIRED_HPARAMS if hparams.get(key) is None]
    if missing:
        raise ValueError(f"hparams lacks {', '.join(missing)}")
    _check_numbers(hparams, metrics)


def _check_numbers(hparams: dict, metrics: dict) -> None:
    """The values the report computes with must be numbers: a string would crash it later."""
    width, lr = hparams["hidden_size"], hparams["learning_rate"]
    if not _is_number(width) or width != int(width) or width <= 0:
        raise ValueError(f"hparams.hidden_size {width!r} is not a positive integer")
    if not _is_number(lr) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"hparams.learning_rate {lr!r} is not a positive number")
    for key, value in metrics.items():
        if value is not None and not _is_number(value):
            raise ValueError(f"metrics.{key} {value!r} is neither a number nor null")


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
    """A Markdown bullet for a diverged or failed run: where it diverged, or its error."""
    if r["status"] == "diverged":
        return f"- diverged: `{r['label']}` at step {_fmt(r.get('diverged_at_step'), '.0f')}"
    return f"- failed: `{r['label']}`: {r.get('error') or 'no error recorded'}"


def format_markdown(
    results: list[dict], rows: list[dict], warnings: list[str], runs_dir: str | os.PathLike
) -> str:
    """``report.md``: the summary, each group's runs, then the best lr per pair and width."""
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
        lines += [f"### {NAMES.get(param, param)}, {NAMES.get(opt, opt)}", ""]
        lines += [markdown_table(BEST_LR_HEADER, body), ""]
    return "\n".join(lines)


_BEST_LR_NOTE = (
    "Per seed, the best lr is the one with the lowest final val/loss among completed runs "
    "(a diverged run counts as +inf). Across seeds: the lr 2^mean, the mean ± population std "
    "of log2(best lr), and the best loss's mean ± std. Under muP, log2 best lr should stay "
    "put as width grows; under SP it drifts."
)


# --- plot -----------------------------------------------------------------------------


def plot_transfer(results: list[dict], out: str | os.PathLike | BinaryIO) -> list[dict]:
    """Draw the transfer plot as a PNG into ``out``; return one metadata dict per panel.

    Panels sit in a grid: one column per parametrization, one row per optimizer, and a
    cell with no runs is left out. Metadata, in plot order: parametrization, optimizer,
    widths, ylim, clipped (points drawn on the clip line) and diverged (``x`` markers).
    """
    curves = transfer_curves(results)
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
    ax.set_title(f"{NAMES.get(param, param)}, {NAMES.get(opt, opt)}")
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("final val/loss (nats/token)")
    ax.grid(alpha=0.3)
    meta = {"parametrization": param, "optimizer": opt, "widths": [c["width"] for c in curves]}
    if not curves:
        ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center")
        return {**meta, "ylim": None, "clipped": 0, "diverged": 0}
    low, top = y_limits(curves)
    span = top - low
    ax.set_ylim(low - 0.05 * span, top + 0.15 * span)
    ax.axhline(top, color="0.6", ls="--", lw=0.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    counts = np.array([_draw_curve(ax, c, colors, top, span) for c in curves])  # (W, 2)
    clipped, diverged = counts.sum(axis=0).tolist()
    return {**meta, "ylim": (low, top), "clipped": clipped, "diverged": diverged}


def _draw_curve(ax: Axes, c: dict, colors: dict, top: float, span: float) -> tuple[int, int]:
    """One width's curve, band, best star and clip/divergence marks; return their counts."""
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
    return int(clipped.sum()), int(diverged.sum())


def _legend(fig: Figure, colors: dict) -> None:
    """One legend for the figure: the widths, then what the markers mean."""
    handles = [
        Line2D([], [], color=col, marker="o", ms=3, label=str(w)) for w, col in colors.items()
    ]
    handles += [
        Line2D([], [], ls="", marker="*", color="0.5", mec="black", ms=10, label="best lr"),
        Line2D([], [], ls="", marker="^", color="0.3", mfc="white", ms=7, label="clipped"),
        Line2D([], [], ls="", marker="x", color="0.3", ms=7, mew=1.8, label="diverged"),
    ]
    fig.legend(handles=handles, title="width", loc="outside right upper", fontsize="small")


# --- writing --------------------------------------------------------------------------


def write_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Write results.csv, report.md and transfer.png into ``out_dir`` (default runs_dir).

    Returns ``results_csv``, ``report_md``, ``transfer_png`` (paths), ``table`` (the text
    the CLI prints), ``warnings`` (one line per skipped result.json; the CLI prints them)
    and ``panels`` (the plot's per-panel metadata). Raises ``ConfigError`` when there is
    no result.json, or none is readable.
    """
    results, warnings = load_results(runs_dir)
    if not results:
        raise ConfigError(
            f"no readable result.json below {runs_dir}: all {len(warnings)} were skipped; "
            f"the first: {warnings[0]}"
        )
    out = Path(runs_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = best_lr_table(results)
    paths = {
        "results_csv": out / "results.csv",
        "report_md": out / "report.md",
        "transfer_png": out / "transfer.png",
    }
    write_atomic(paths["results_csv"], format_csv(results))
    write_atomic(paths["report_md"], format_markdown(results, rows, warnings, runs_dir))
    png = io.BytesIO()  # drawn in memory, so a failed plot leaves the old file as it was
    panel_meta = plot_transfer(results, png)
    write_atomic(paths["transfer_png"], png.getvalue())
    table = format_table(results, rows, skipped=len(warnings))
    return {**paths, "table": table, "warnings": warnings, "panels": panel_meta}


def main(*, runs_dir: str = "runs", out_dir: str | None = None) -> int:
    """Summarise a sweep: write results.csv, report.md and transfer.png, print the best lrs.

    Args:
        runs_dir: The sweep's folder: every result.json below it is read.
        out_dir: Where the three files go; default: runs_dir.
    """
    out = write_report(runs_dir, out_dir)
    for line in out["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(out["table"])
    written = ", ".join(str(out[key]) for key in ("results_csv", "report_md", "transfer_png"))
    print(f"\nwrote {written}")
    return 0
