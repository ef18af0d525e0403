"""The transfer plot (validation loss against log2 learning rate, a curve per width) and a
study's slice plot (``plot_slices``: its objective against each hyperparameter), and the
μTransfer study's loss against width per arm (``plot_arms``) and its one-change
experiments against the arm they change (``plot_hazards``).

``plot_transfer`` draws it (matplotlib's Agg canvas: no display needed) from the numbers
of ``transfer``; nothing else in the project imports matplotlib.

Reading the transfer plot. One panel per (parametrization, optimizer): SP on the left,
muP on the right, one row per optimizer. Each curve is one width, and darker means
wider (``width_colors``). It plots the final ``val/loss`` (mean over seeds, shaded min to
max over seeds) against log2(learning rate), with a star at the curve's minimum. Under
muP the stars line up vertically and the wider curves sit lower at every lr; under SP
the stars move as width grows. A tick along the panel's foot marks each width's fitted
best lr. The y-axis stops at a robust top (the dashed line; see ``y_limits``) so that
one huge loss does not flatten every curve: an open triangle on the dashed line is a
loss clipped there. An ``x`` above the line is an lr at which a seed of that width
diverged (a seed that diverged makes the mean +inf, so the curve breaks there).
"""

from __future__ import annotations

import math
import os
from typing import BinaryIO

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from lstm_lightning.transfer import (
    OPT_ORDER,
    PARAM_ORDER,
    fitted_best_lr_table,
    pair_name,
    panel_order,
    rank,
    transfer_curves,
)

DPI = 120
PANEL_SIZE = (5.0, 3.8)  # inches per panel: (width, height)


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
    params = sorted({p for p, _ in curves}, key=lambda p: rank(p, PARAM_ORDER))
    opts = sorted({o for _, o in curves}, key=lambda o: rank(o, OPT_ORDER))
    widths = sorted({c["width"] for cs in curves.values() for c in cs})
    colors = width_colors(widths)
    size = (PANEL_SIZE[0] * len(params) + 1.0, PANEL_SIZE[1] * len(opts))  # + 1 in: legend
    fig = Figure(figsize=size if curves else PANEL_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws off-screen: no display needed
    if not curves:  # only searched runs (tune, transfer): no learning-rate grid to draw
        fig.text(0.5, 0.5, "no learning-rate sweep in these runs", ha="center", va="center")
        fig.savefig(out, format="png", dpi=DPI)
        return []
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


# --- a study's slice plot -----------------------------------------------------------------


def plot_slices(study: dict, out: str | os.PathLike | BinaryIO) -> list[dict]:
    """A study's slice plot as a PNG into ``out``: its objective against each
    hyperparameter, one panel each, for the complete trials (``studies.read_study``); a
    star marks the best. A log range of the space gets a log x-axis; a choice is a
    position per value; a loss above the robust top (``y_limits``) is an open triangle on
    it. Returns per panel: key, scale (log, linear or categorical), points, clipped.
    """
    keys = list(study["space"]) or sorted({k for t in study["trials"] for k in t["params"]})
    done = [t for t in study["trials"] if t["state"] == "complete" and t["value"] is not None]
    cols = max(1, min(len(keys), 3))
    rows = max(1, math.ceil(len(keys) / cols))
    fig = Figure(figsize=(4.0 * cols, 3.2 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws off-screen: no display needed
    grid = fig.subplots(rows, cols, squeeze=False)  # (rows, cols) of Axes
    fig.suptitle(f"study {study['study']}: {study['objective']} per hyperparameter")
    meta = []
    for i, ax in enumerate(grid.flat):
        if i >= len(keys):
            fig.delaxes(ax)
            continue
        meta.append(_slice_panel(ax, keys[i], study["space"].get(keys[i]) or {}, done))
        ax.set_ylabel(study["objective"])
    if not keys:
        grid[0, 0].text(0.5, 0.5, "no hyperparameters", transform=grid[0, 0].transAxes)
    fig.savefig(out, format="png", dpi=DPI)
    return meta


def _slice_panel(ax: Axes, key: str, dist: dict, trials: list[dict]) -> dict:
    """One hyperparameter's panel: a dot per complete trial, the best as a star."""
    values, clipped = [t["params"].get(key) for t in trials], 0
    losses = np.array([t["value"] for t in trials], dtype=float)  # (T,)
    numeric = "choices" not in dist and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    if numeric:
        x = np.array(values, dtype=float)  # (T,)
        scale = "log" if dist.get("log") else "linear"
        ax.set_xscale(scale)
        ax.xaxis.set_minor_formatter(NullFormatter())  # a short log range labels minors too
    else:
        choices = [
            *dist.get("choices", []),
            *[v for v in values if v not in dist.get("choices", [])],
        ]
        choices = list(dict.fromkeys(choices))  # in the space's order, unknowns after
        x = np.array([choices.index(v) for v in values], dtype=float)
        ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
        scale = "categorical"
    ax.set_title(key)
    ax.set_xlabel(key)
    ax.grid(alpha=0.3)
    if trials:  # a robust top, as the transfer plot's: a huge loss is an open triangle there
        low, top = y_limits([{"mean": losses, "lo": losses}])
        ax.set_ylim(low - 0.05 * (top - low), top + 0.08 * (top - low))
        kept = losses <= top
        clipped = int((~kept).sum())
        ax.plot(x[kept], losses[kept], "o", color="tab:blue", alpha=0.6, ms=5)
        ax.plot(x[~kept], np.full((~kept).sum(), top), "^", color="tab:blue", mfc="white", ms=7)
        best = int(np.argmin(losses))
        ax.plot(x[best], losses[best], "*", color="tab:orange", mec="black", ms=14)
    else:
        ax.text(0.5, 0.5, "no complete trial", transform=ax.transAxes, ha="center")
    return {"key": key, "scale": scale, "points": len(trials), "clipped": clipped}


# --- the μTransfer study's arms -------------------------------------------------------------

ARM_STYLE = {  # arm -> (colour, marker, label); the study's protocol names the arms
    "A": ("tab:green", "o", "A: muP, tuned at the proxy"),
    "A2": ("tab:olive", "^", "A2: muP, tuned at the proxy by TPE"),
    "B": ("tab:red", "v", "B: SP, tuned at the proxy"),
    "B2": ("tab:pink", "x", "B2: SP, A2's recipe"),
    "C": ("tab:blue", "s", "C: SP, tuned at the target"),
    "D": ("tab:gray", "D", "D: SP, lr grid at the target"),
}


def plot_arms(
    rows: list[dict],
    out: str | os.PathLike | BinaryIO,
    styles: dict[str, tuple[str, str, str]] | None = None,
    ylabel: str = "final val/loss (nats), mean over seeds",
) -> list[dict]:
    """Final val/loss against width, a line per arm, a panel per corpus, as a PNG into
    ``out``. ``rows`` are the study summary's (corpus, width, arm, loss_mean, loss_min,
    loss_max, n_seeds); the marker is the mean over seeds, the bar spans min to max. An arm
    with no finished seed at a width has no point there. ``styles``: arm -> (colour,
    marker, legend label), in legend order; the study's arms by default (an arm not in it
    is not drawn). Returns per panel: corpus, and arm -> widths drawn."""
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    fig = Figure(figsize=(4.6 * max(len(corpora), 1) + 1.6, 3.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws off-screen: no display needed
    axes = fig.subplots(1, max(len(corpora), 1), squeeze=False)[0]  # (corpora,) of Axes
    meta = []
    for ax, corpus in zip(axes, corpora):
        drawn = {}
        for arm, (color, marker, label) in (styles or ARM_STYLE).items():
            mine = sorted(
                (r for r in rows if r["corpus"] == corpus and r["arm"] == arm and r["n_seeds"]),
                key=lambda r: r["width"],
            )
            if not mine:
                continue
            x = np.array([r["width"] for r in mine], dtype=float)  # (W,)
            y = np.array([r["loss_mean"] for r in mine])  # (W,)
            bars = np.array([[m - r["loss_min"], r["loss_max"] - m] for r, m in zip(mine, y)])
            ax.errorbar(x, y, yerr=bars.T, color=color, marker=marker, label=label, capsize=3)
            drawn[arm] = [int(w) for w in x]
        ax.set_xscale("log", base=2)
        ax.set_title(corpus)
        ax.set_xlabel("width (hidden size)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        meta.append({"corpus": corpus, "arms": drawn})
    if meta:  # one legend of every panel's lines: an arm may be drawn in one panel only
        handles = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        axes[-1].legend(handles.values(), handles.keys(), loc="upper left",
                        bbox_to_anchor=(1.02, 1.0), fontsize=8)  # fmt: skip
    else:
        axes[0].text(0.5, 0.5, "no finished arm", transform=axes[0].transAxes, ha="center")
    fig.savefig(out, format="png", dpi=DPI)
    return meta


def plot_hazards(
    hazards: list[dict], bases: list[dict], out: str | os.PathLike | BinaryIO
) -> list[dict]:
    """One-change experiments against the arm they change, a panel per corpus, as a PNG
    into ``out``. ``hazards`` are the study summary's hazard rows (corpus, width, base,
    hazard, loss_mean, loss_min, loss_max, n_seeds, versus_base.clear); ``bases`` its arm
    rows. A row per change, in the given order: the marker is its mean over seeds minus
    the base arm's mean (right of 0: the change hurts), the bar spans its seeds, the grey
    band the base arm's own seeds; red or green when the ranges do not overlap (hurts,
    helps). A row is named by the change, and by its arm and width where the figure holds
    several. Returns per panel: corpus, and the rows drawn with their gaps."""
    base_of = {(r["corpus"], r["width"], r["arm"]): r for r in bases if r["n_seeds"]}
    pairs = [(h, base_of[h["corpus"], h["width"], h["base"]]) for h in hazards
             if h["n_seeds"] and (h["corpus"], h["width"], h["base"]) in base_of]  # fmt: skip
    # A row per change; named by its arm and width too where the figure has several
    recipes, widths = {h["base"] for h, _ in pairs}, {h["width"] for h, _ in pairs}

    def row(h: dict) -> str:
        name = f"{h['base']}: {h['hazard']}" if len(recipes) > 1 else h["hazard"]
        return f"{name} @{h['width']}" if len(widths) > 1 else name

    names = list(dict.fromkeys(row(h) for h, _ in pairs))  # the rows, top down
    corpora = list(dict.fromkeys(h["corpus"] for h, _ in pairs))  # the panels
    fig = Figure(figsize=(4.2 * max(len(corpora), 1) + 2.2, 0.32 * len(names) + 1.4),
                 dpi=DPI, layout="constrained")  # fmt: skip
    FigureCanvasAgg(fig)
    shape = (1, max(len(corpora), 1))
    axes = fig.subplots(*shape, squeeze=False, sharex=True, sharey=True)[0]  # (corpora,)
    meta = []
    for ax, corpus in zip(axes, corpora):
        drawn, arms = {}, set()
        for h, base in (pair for pair in pairs if pair[0]["corpus"] == corpus):
            y, mean = names.index(row(h)), base["loss_mean"]
            ax.fill_betweenx([y - 0.35, y + 0.35], base["loss_min"] - mean,
                             base["loss_max"] - mean, color="0.85")  # fmt: skip
            gap = h["loss_mean"] - mean
            clear = (h.get("versus_base") or {}).get("clear")
            color = ("tab:red" if gap > 0 else "tab:green") if clear else "0.35"
            bar = [[h["loss_mean"] - h["loss_min"]], [h["loss_max"] - h["loss_mean"]]]
            ax.errorbar([gap], [y], xerr=bar, color=color, marker="o", capsize=3)
            drawn[row(h)] = round(gap, 6)
            arms.add(h["base"])
        ax.axvline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(f"{corpus}: {', '.join(sorted(arms))}'s recipe, one change")  # >= 1 pair
        ax.set_xlabel("final val/loss − the arm's mean (nats); right: hurts")
        ax.grid(axis="x", alpha=0.3)
        meta.append({"corpus": corpus, "changes": drawn})
    if names:
        axes[0].set_yticks(range(len(names)), names)
        axes[0].invert_yaxis()  # the first change on top
    else:
        axes[0].text(0.5, 0.5, "no finished experiment", transform=axes[0].transAxes, ha="center")
    fig.savefig(out, format="png", dpi=DPI)
    return meta
