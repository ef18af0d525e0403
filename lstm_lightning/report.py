"""The sweep report: what every run gave, and whether the best learning rate transferred.

``write_report(runs_dir)`` reads every ``result.json`` below ``runs_dir`` through
``results.read`` (the schema: ``docs/result_schema.md``) and writes four files, each
atomically:

- ``results.csv``: one row per run, columns ``CSV_COLUMNS`` (derived from the result
  schema), in path order.
- ``report.md``: per group, a table of its runs and a list of its diverged and failed
  runs (a worker's death named as such); then, per (parametrization, optimizer), the best
  learning rate at each width; then the learning-rate transfer metrics and verdicts.
- ``transfer.png``: the transfer plot (``plots``).
- ``transfer.json``: the transfer metrics, machine-readable (``docs/result_schema.md``).

How each number is computed is ``transfer``'s docstring. A file that cannot be read or
breaks the schema is skipped with one warning line naming it; schema 1 files are read.
``python cli.py report --runs_dir DIR`` runs ``main``: it writes the files and prints
the best-lr table, the transfer table and the verdicts.
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

from lstm_lightning import studies
from lstm_lightning.errors import ConfigError
from lstm_lightning.files import write_atomic
from lstm_lightning.plots import plot_slices, plot_transfer
from lstm_lightning.results import (
    FIELDS,
    FILE,
    HPARAMS,
    METRICS,
    OBJ,
    STATUSES,
    ResultError,
    finite,
)
from lstm_lightning.results import read as read_result
from lstm_lightning.tables import fmt as _fmt
from lstm_lightning.tables import is_number as _is_number
from lstm_lightning.tables import markdown_table
from lstm_lightning.transfer import (
    MUP_DRIFT_MAX,
    SP_DRIFT_MIN,
    best_lr_table,
    edge_text,
    format_lr,
    loss_text,
    pair_name,
    pair_of,
    panel_order,
    panels,
    transfer_metrics,
)

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
STUDIES_JSON = "studies.json"  # with studies or transfers: ``studies``


# --- reading --------------------------------------------------------------------------


def load_results(runs_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Every readable ``result.json`` below ``runs_dir``, sorted by path, and warnings.

    A file that cannot be read or breaks the schema is skipped, and one warning line names
    it and its problem. Each result gains ``"path"``, its file. Raises ``ConfigError`` (a
    ``ValueError``) when the directory holds no result.json at all.
    """
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"runs_dir {root} is a file, not a folder; give the sweep's runs folder")
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
    return (panel_order(pair_of(r)), h["hidden_size"], h["learning_rate"], seed_key, r["label"])


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
    if r.get("worker_death"):  # its error, when set, also says how to resume it
        return f"- failed (worker death): `{r['label']}`: {r.get('error') or r['worker_death']}"
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
    loss = loss_text(row["loss_at_transferred_lr"])
    return [pair_name(panel), str(row["width"]), fitted, str(row["n_seeds"]), edge_text(row), loss]


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
    return json.dumps(finite(doc), indent=2, allow_nan=False) + "\n"


# --- writing --------------------------------------------------------------------------


def write_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Write results.csv, report.md, transfer.png and transfer.json into ``out_dir``
    (default runs_dir); with studies or transfers there, also studies.json and a
    ``slice_<study>.png`` per study (``studies``, ``plots.plot_slices``).

    Returns ``results_csv``, ``report_md``, ``transfer_png``, ``transfer_json`` (paths),
    ``table`` (the best-lr text the CLI prints), ``transfer`` (``transfer_metrics``),
    ``transfer_text`` (its text, which the CLI prints next), ``warnings`` (one line per
    skipped result.json or study; the CLI prints them), ``panels`` (the plot's per-panel
    metadata) and ``studies`` (``_studies``). Raises ``ConfigError`` when there is no
    result.json, or none is readable, or when a folder given is a file or ``out_dir``
    cannot be made.
    """
    out = Path(runs_dir if out_dir is None else out_dir)
    if out_dir is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {out} is a file, not a folder; give a folder (made if missing)")
    results, warnings = load_results(runs_dir)
    if not results:
        raise ConfigError(
            f"no readable result.json below {runs_dir}: all {len(warnings)} were skipped; "
            f"the first: {warnings[0]}"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in its path, or no permission
        raise ConfigError(f"cannot make out_dir {out}: {err.strerror or err}") from None
    grid = [r for r in results if not studies.is_search_run(r)]  # the lr sweeps
    rows, metrics = best_lr_table(grid), transfer_metrics(grid)
    found = _studies(runs_dir, results, out)
    paths = {name: out / name.replace("_", ".") for name in OUTPUTS}
    write_atomic(paths["results_csv"], format_csv(results))
    md = format_markdown(results, rows, warnings, runs_dir, metrics) + found.pop("markdown")
    write_atomic(paths["report_md"], md)
    png = io.BytesIO()  # drawn in memory, so a failed plot leaves the old file as it was
    panel_meta = plot_transfer(grid, png)
    write_atomic(paths["transfer_png"], png.getvalue())
    write_atomic(paths["transfer_json"], transfer_json(metrics, runs_dir))
    for path, data in found.pop("files").items():
        write_atomic(path, data)
    table = format_table(results, rows, skipped=len(warnings))
    text = "\n".join(["Learning-rate transfer", "", *transfer_lines(metrics)])
    return {**paths, "table": table, "transfer": metrics, "transfer_text": text,
            "warnings": warnings + found["warnings"], "panels": panel_meta,
            "studies": found}  # fmt: skip


def _studies(runs_dir: str | os.PathLike, results: list[dict], out: Path) -> dict:
    """The studies and transfers below runs_dir: ``studies``, ``transfers`` (data),
    ``warnings``, ``text`` (what the CLI prints), ``markdown`` (report.md's sections) and
    ``files`` (path -> bytes or text: studies.json and each slice plot; none without a
    study or a transfer; write_report writes and drops them) and ``written``, their paths."""
    found, notes = studies.read_studies(runs_dir, results)
    transfers = studies.transfer_tables(results, found)
    pngs = {s["study"]: f"slice_{s['study']}.png" for s in found}
    files: dict[Path, bytes | str] = {}
    for s in found:
        png = io.BytesIO()
        plot_slices(s, png)
        files[out / pngs[s["study"]]] = png.getvalue()
    if found or transfers or notes:
        files[out / STUDIES_JSON] = studies.studies_json(found, transfers, runs_dir, notes)
    md = "\n".join(studies.markdown(found, transfers, notes, pngs)) if files else ""
    return {"studies": found, "transfers": transfers, "warnings": notes, "files": files,
            "text": studies.text(found, transfers), "markdown": md,
            "written": sorted(files)}  # fmt: skip


def main(*, runs_dir: str = "runs", out_dir: str | None = None) -> int:
    """Summarise a sweep: write the report's files, print best lrs and transfer verdicts.

    The files: results.csv, report.md, transfer.png and transfer.json; with studies
    (cli.py tune) or transfers (cli.py transfer), also studies.json and slice_<study>.png.

    Args:
        runs_dir: The sweep's folder: every result.json below it is read.
        out_dir: Where the files go; default: runs_dir.
    """
    out = write_report(runs_dir, out_dir)
    for line in out["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(out["table"])
    print("\n" + out["transfer_text"])
    if out["studies"]["text"]:
        print(out["studies"]["text"])
    written = [*(out[key] for key in OUTPUTS), *out["studies"]["written"]]
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0
