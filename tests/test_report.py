"""The sweep report: exact CSV rows, the best-lr table, lr transfer, divergence, the plot,
bad files, atomicity."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lstm_lightning import cli, plots, report
from lstm_lightning.errors import ConfigError
from lstm_lightning.plots import y_limits
from lstm_lightning.report import (
    CSV_COLUMNS,
    format_table,
    load_results,
    transfer_json,
    write_report,
)
from lstm_lightning.transfer import (
    best_lr_table,
    fitted_best_lr_table,
    fitted_optimum,
    lr_drift,
    parabola_vertex,
    run_loss,
    transfer_curves,
    transfer_metrics,
    wider_is_better,
)


def write_result(
    root: Path,
    group: str,
    label: str,
    *,
    param: str = "mup",
    opt: str = "sgd",
    width: int = 16,
    lr: float = 2.0**-4,
    seed: int = 0,
    status: str = "completed",
    val_loss: float | None = 1.9,
    diverged_at_step: int | None = None,
    error: str | None = None,
    **fields,
) -> Path:
    """Write ``root/group/label/result.json`` as schema 1's doc laid it out; ``fields``
    replace or add top-level fields (``schema=2, worker_death=...``)."""

    def loss(delta: float) -> float | None:
        return None if val_loss is None else val_loss + delta

    result = {
        "schema": 1,
        "group": group,
        "label": label,
        "status": status,
        "overrides": {"hidden_size": width, "optimizer": opt, "parametrization": param,
                      "learning_rate": lr},
        "config_hash": "3f2a",
        "hparams": {"parametrization": param, "optimizer": opt, "hidden_size": width,
                    "learning_rate": lr, "seed": seed, "num_layers": 1, "batch_size": 32,
                    "seq_len": 64, "max_steps": 300, "base_hidden_size": 32},
        "metrics": {"train/loss": loss(0.25), "val/loss": loss(0.0),
                    "val/loss_best": loss(-0.125), "val/loss_floor": 1.6},
        "steps": 300 if diverged_at_step is None else diverged_at_step,
        "tokens_per_second": 350000.0,
        "wall_seconds": 5.5,
        "diverged_at_step": diverged_at_step,
        "world_size": 1,
        "error": error,
        **fields,
    }  # fmt: skip
    path = root / group / label / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


def write_sweep(root: Path) -> None:
    """9 runs. muP/SGD width 16: seed 0 is best at 2^-3 (1.70), seed 1 at 2^-5 (1.60);
    width 32: one seed, best at 2^-4 (1.50). Two diverged (one with a stale low val/loss),
    one failed, and one SP/Adam run."""
    g = "MUP_SGD"
    write_result(root, g, "a_w16_lr-3_s0", lr=2.0**-3, seed=0, val_loss=1.70)
    write_result(root, g, "b_w16_lr-4_s0", lr=2.0**-4, seed=0, val_loss=1.80)
    write_result(
        root,
        g,
        "c_w16_lr-2_s0",
        lr=2.0**-2,
        seed=0,
        status="diverged",
        val_loss=None,
        diverged_at_step=12,
    )
    write_result(root, g, "d_w16_lr-5_s1", lr=2.0**-5, seed=1, val_loss=1.60)
    write_result(root, g, "e_w16_lr-3_s1", lr=2.0**-3, seed=1, val_loss=1.90)
    write_result(
        root,
        g,
        "f_w16_lr-1_s1",
        lr=2.0**-1,
        seed=1,
        status="diverged",
        val_loss=0.10,
        diverged_at_step=3,
    )
    write_result(root, g, "g_w32_lr-4_s0", width=32, lr=2.0**-4, seed=0, val_loss=1.50)
    write_result(
        root,
        g,
        "h_w32_lr-3_s0",
        width=32,
        lr=2.0**-3,
        seed=0,
        status="failed",
        val_loss=None,
        error="RuntimeError: out of memory",
    )
    write_result(root, "SP_ADAM", "a_w16_lr-6_s0", param="sp", opt="adam", lr=2.0**-6, val_loss=2.0)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict]:
    """The 9-run sweep and its written report (built once: plotting takes a second)."""
    root = tmp_path_factory.mktemp("runs")
    write_sweep(root)
    return root, write_report(root)


def md_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, padding stripped."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- results.csv ----------------------------------------------------------------------


def test_csv_has_one_row_per_run_in_path_order(sweep):
    root, out = sweep
    with open(out["results_csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[:3] for r in rows[1:]] == [
        ["MUP_SGD", "a_w16_lr-3_s0", "completed"],
        ["MUP_SGD", "b_w16_lr-4_s0", "completed"],
        ["MUP_SGD", "c_w16_lr-2_s0", "diverged"],
        ["MUP_SGD", "d_w16_lr-5_s1", "completed"],
        ["MUP_SGD", "e_w16_lr-3_s1", "completed"],
        ["MUP_SGD", "f_w16_lr-1_s1", "diverged"],
        ["MUP_SGD", "g_w32_lr-4_s0", "completed"],
        ["MUP_SGD", "h_w32_lr-3_s0", "failed"],
        ["SP_ADAM", "a_w16_lr-6_s0", "completed"],
    ]
    # fmt: off
    assert rows[1] == ["MUP_SGD", "a_w16_lr-3_s0", "completed", "mup", "sgd", "16", "0.125",
                       "0", "1", "32", "64", "300", "32", "1.95", "1.7", "1.575", "1.6", "3f2a",
                       "300", "350000.0", "5.5", "", "", "1", "", ""]
    assert rows[3] == ["MUP_SGD", "c_w16_lr-2_s0", "diverged", "mup", "sgd", "16", "0.25",
                       "0", "1", "32", "64", "300", "32", "", "", "", "1.6", "3f2a", "12",
                       "350000.0", "5.5", "12", "", "1", "", ""]
    # fmt: on


# --- the best-lr table ----------------------------------------------------------------


def test_best_lr_per_seed_then_mean_and_population_std(sweep):
    results, _ = load_results(sweep[0])
    table = {(r["parametrization"], r["optimizer"], r["width"]): r for r in best_lr_table(results)}
    assert list(table) == [("sp", "adam", 16), ("mup", "sgd", 16), ("mup", "sgd", 32)]
    # Seeds best at 2^-3 and 2^-5: log2 mean -4; population std (ddof=0) 1, not sqrt(2).
    w16 = table[("mup", "sgd", 16)]
    assert w16["n_seeds"] == 2
    assert w16["best_log2_lr_mean"] == pytest.approx(-4.0, abs=1e-12)
    assert w16["best_log2_lr_std"] == pytest.approx(1.0, abs=1e-12)
    assert w16["best_lr"] == pytest.approx(2.0**-4, abs=1e-12)
    assert w16["best_loss_mean"] == pytest.approx(1.65, abs=1e-12)
    assert w16["best_loss_std"] == pytest.approx(0.05, abs=1e-12)
    # The failed run at 2^-3 takes no part: the one seed's best is 2^-4.
    w32 = table[("mup", "sgd", 32)]
    assert (w32["best_log2_lr_mean"], w32["best_log2_lr_std"], w32["n_seeds"]) == (-4.0, 0.0, 1)
    assert set(w32) == {
        *("parametrization", "optimizer", "width", "best_log2_lr_mean", "best_log2_lr_std"),
        *("best_lr", "best_loss_mean", "best_loss_std", "n_seeds"),
    }


def test_diverged_is_never_best_even_with_a_low_stale_val_loss(sweep):
    results, _ = load_results(sweep[0])
    stale = next(r for r in results if r["label"] == "f_w16_lr-1_s1")
    assert stale["metrics"]["val/loss"] == 0.10 and run_loss(stale) == math.inf
    assert all(row["best_log2_lr_mean"] != -1.0 for row in best_lr_table(results))


def test_a_seed_whose_every_lr_diverged_has_no_best(tmp_path):
    write_result(tmp_path, "G", "x0", lr=0.5, status="diverged", val_loss=None)
    write_result(tmp_path, "G", "x1", lr=0.25, status="diverged", val_loss=None)
    (row,) = best_lr_table(load_results(tmp_path)[0])
    assert row["n_seeds"] == 0 and math.isnan(row["best_log2_lr_mean"])


@pytest.mark.parametrize(
    "status, val_loss, expected",
    [
        ("completed", 1.5, 1.5),
        ("completed", math.nan, math.inf),  # a NaN that slipped through counts as diverged
        ("completed", None, None),  # never validated: no loss to rank
        ("diverged", 1.0, math.inf),
        ("failed", 1.0, None),
    ],
)
def test_run_loss(status, val_loss, expected):
    result = {"status": status, "metrics": {"val/loss": val_loss}}
    assert run_loss(result) == expected


def test_format_table_prints_counts_and_best_lr_rows(sweep):
    results, _ = load_results(sweep[0])
    text = format_table(results, skipped=2)
    assert text.splitlines()[0] == (
        "9 runs: 6 completed, 2 diverged, 1 failed. "
        "Skipped 2 unreadable result.json (see the warnings)."
    )
    assert md_rows(text)[1:] == [
        ["sp", "adam", "16", "0.0156", "-6.00 ± 0.00", "2.0000 ± 0.0000", "1"],
        ["mup", "sgd", "16", "0.0625", "-4.00 ± 1.00", "1.6500 ± 0.0500", "2"],
        ["mup", "sgd", "32", "0.0625", "-4.00 ± 0.00", "1.5000 ± 0.0000", "1"],
    ]
    assert sweep[1]["table"] == format_table(results)


# --- report.md ------------------------------------------------------------------------


def test_report_md_has_group_tables_problems_and_best_lr_tables(sweep):
    text = sweep[1]["report_md"].read_text(encoding="utf-8")
    rows = md_rows(text)
    groups, best = text.split("## Best learning rate per width", 1)
    assert groups.index("### MUP_SGD") < groups.index("### SP_ADAM")
    assert "9 runs: 6 completed, 2 diverged, 1 failed." in groups  # the whole sweep
    assert "8 runs: 5 completed, 2 diverged, 1 failed." in groups  # the group MUP_SGD
    assert ["a_w16_lr-3_s0", "completed", "16", "2^-3", "0", "1.7000", "1.5750", "1.6000",
            "300", "350,000", "5.5"] in rows  # fmt: skip
    assert ["c_w16_lr-2_s0", "diverged", "16", "2^-2", "0", "—", "—", "1.6000", "12",
            "350,000", "5.5"] in rows  # fmt: skip
    # Runs sorted by width, then lr, then seed: numerically, not by label.
    labels = [row[0] for row in md_rows(groups) if row[0].endswith(("_s0", "_s1"))]
    assert labels[:8] == [
        *("d_w16_lr-5_s1", "b_w16_lr-4_s0", "a_w16_lr-3_s0", "e_w16_lr-3_s1"),
        *("c_w16_lr-2_s0", "f_w16_lr-1_s1", "g_w32_lr-4_s0", "h_w32_lr-3_s0"),
    ]
    assert "- diverged: `c_w16_lr-2_s0` at step 12" in text
    assert "- failed: `h_w32_lr-3_s0`: RuntimeError: out of memory" in text
    assert "### SP, Adam" in best and "### muP, SGD" in best
    assert best.index("### SP, Adam") < best.index("### muP, SGD")
    assert ["16", "0.0625", "-4.00 ± 1.00", "1.6500 ± 0.0500", "2"] in md_rows(best)


def test_a_worker_death_is_listed_as_one(tmp_path):
    death = "worker died with signal 9 (SIGKILL, e.g. the out-of-memory killer)"
    write_result(tmp_path, "G", "ok")
    write_result(tmp_path, "G", "v2", status="failed", val_loss=None, schema=2,
                 resumed_from_step=None, worker_death=death)  # fmt: skip
    write_result(tmp_path, "G", "v1", status="failed", val_loss=None, error=death)  # schema 1
    write_result(tmp_path, "G", "oom", status="failed", val_loss=None, schema=2,
                 resumed_from_step=4, worker_death=None, error="RuntimeError: oom")  # fmt: skip
    out = write_report(tmp_path)
    text = out["report_md"].read_text(encoding="utf-8")
    assert out["warnings"] == []
    assert f"- failed (worker death): `v2`: {death}" in text
    assert f"- failed (worker death): `v1`: {death}" in text
    assert "- failed: `oom`: RuntimeError: oom" in text
    assert "3 failed" in out["table"]


# --- transfer.png ---------------------------------------------------------------------


def test_transfer_curves_keep_diverged_runs(sweep):
    curves = transfer_curves(load_results(sweep[0])[0])
    assert list(curves) == [("sp", "adam"), ("mup", "sgd")]
    w16, w32 = curves[("mup", "sgd")]
    assert w16["width"] == 16 and w32["width"] == 32
    np.testing.assert_array_equal(w16["log2_lr"], [-5, -4, -3, -2, -1])  # (L,)
    np.testing.assert_array_equal(w16["diverged"], [False, False, False, True, True])
    np.testing.assert_array_equal(w16["n_seeds"], [1, 1, 2, 1, 1])
    np.testing.assert_allclose(w16["mean"], [1.6, 1.8, 1.8, np.inf, np.inf])
    assert (w16["lo"][2], w16["hi"][2]) == pytest.approx((1.7, 1.9))  # the two seeds at 2^-3
    np.testing.assert_array_equal(w32["log2_lr"], [-4])  # the failed run is not a point


def test_transfer_png_has_one_panel_per_pair(sweep):
    out = sweep[1]
    meta = out["panels"]
    assert [(m["parametrization"], m["optimizer"]) for m in meta] == [
        ("sp", "adam"),
        ("mup", "sgd"),
    ]
    assert meta[1]["widths"] == [16, 32] and meta[1]["diverged"] == 2
    # A 2 x 2 grid (sp, mup) x (sgd, adam), two cells left out; 5 in per panel + legend.
    w, h = plots.PANEL_SIZE
    assert png_size(out["transfer_png"]) == (round((2 * w + 1) * 120), round(2 * h * 120))


def test_one_pair_gives_one_panel(tmp_path):
    for e in (-3, -2):
        write_result(tmp_path, "G", f"lr{e}", opt="adam", lr=2.0**e, val_loss=2.0 + e / 10)
    out = write_report(tmp_path)
    assert [(m["parametrization"], m["optimizer"]) for m in out["panels"]] == [("mup", "adam")]
    w, h = plots.PANEL_SIZE
    assert png_size(out["transfer_png"]) == (round((w + 1) * 120), round(h * 120))


def test_y_limits_clip_an_outlier_only():
    bulk = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
    curve = lambda mean: {"mean": mean, "lo": mean}  # noqa: E731
    assert y_limits([curve(np.append(bulk, 40.0))]) == (1.0, 1.8)
    assert y_limits([curve(np.append(bulk, 2.0))]) == (1.0, 2.0)
    assert y_limits([curve(np.array([np.inf]))]) == (0.0, 1.0)  # only divergences


# --- learning-rate transfer -----------------------------------------------------------

GRID = np.arange(-7.0, 1.0)  # (8,) log2 lrs 2^-7 .. 2^0, as the sweeps use
SEEDED = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def write_curves(root: Path, loss, *, param="mup", opt="adam", widths=(16, 64, 256), seeds=(0,)):
    """A run per width, seed and lr of ``GRID`` with val/loss = loss(width, seed, log2 lr);
    a loss of +inf is written as a diverged run."""
    for width in widths:
        for seed in seeds:
            for x in GRID:
                value = loss(width, seed, x)
                diverged = math.isinf(value)
                write_result(
                    root, f"{param}_{opt}", f"w{width}_s{seed}_lr{x:g}", param=param, opt=opt,
                    width=width, lr=2.0**x, seed=seed, val_loss=None if diverged else value,
                    status="diverged" if diverged else "completed",
                )  # fmt: skip


def quadratic(optima: dict[int, float], base: dict[int, float] | None = None):
    """loss(width, seed, x) = base + 0.05 (x - optimum)^2: exact, so its vertex is exact.
    ``base`` defaults to 2 - 0.01 log2(width): wider is better at every lr."""
    return lambda w, s, x: (
        (base or {}).get(w, 2 - 0.01 * math.log2(w)) + 0.05 * (x - optima[w]) ** 2
    )


def metrics_of(root: Path) -> dict:
    """transfer_metrics keyed by pair: {(parametrization, optimizer): panel}, verdicts."""
    metrics = transfer_metrics(load_results(root)[0])
    panels = {(p["parametrization"], p["optimizer"]): p for p in metrics["panels"]}
    return {**panels, "verdicts": metrics["verdicts"]}


# muP: every width's optimum at 2^-3.3; SP's moves 2.35 octaves. The transfer case.
MUP_OPTIMA = {16: -3.3, 64: -3.3, 256: -3.3}
SP_OPTIMA = {16: -3.25, 64: -4.25, 256: -5.6}


@pytest.fixture(scope="module")
def transfer_sweep(tmp_path_factory) -> tuple[Path, dict]:
    """muP and SP Adam at widths 16, 64, 256, two seeds, and the written report."""
    root = tmp_path_factory.mktemp("transfer")
    write_curves(root, quadratic(MUP_OPTIMA), seeds=(0, 1))
    write_curves(root, quadratic(SP_OPTIMA), param="sp", seeds=(0, 1))
    return root, write_report(root)


def test_vertex_of_an_exact_quadratic_between_grid_points():
    y = 0.05 * (GRID[3:6] + 3.7) ** 2  # x0 = -3.7 lies between -4 and -3
    assert parabola_vertex(GRID[3:6], y) == pytest.approx(-3.7, abs=1e-12)
    x = np.array([-5.0, -4.5, -2.0])  # uneven spacing: the general 3-point formula
    assert parabola_vertex(x, (x + 4.2) ** 2 + 1) == pytest.approx(-4.2, abs=1e-12)


def test_vertex_without_a_minimum_is_the_middle_point():
    assert parabola_vertex([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == 1.0  # collinear
    assert parabola_vertex([0.0, 1.0, 2.0], [1.0, 2.0, 1.0]) == 1.0  # a cap


@SEEDED
@given(
    start=st.floats(-10, 2),
    gaps=st.tuples(st.floats(0.1, 3), st.floats(0.1, 3)),
    curvature=st.floats(0.01, 10),
    center=st.floats(-12, 4),
    floor=st.floats(0, 5),
)
def test_vertex_is_an_exact_quadratics_minimum_clamped(start, gaps, curvature, center, floor):
    x = np.array([start, start + gaps[0], start + gaps[0] + gaps[1]])  # (3,) ascending
    vertex = parabola_vertex(x, curvature * (x - center) ** 2 + floor)
    assert x[0] <= vertex <= x[2]
    assert vertex == pytest.approx(min(max(center, x[0]), x[2]), abs=1e-6)


@SEEDED
@given(
    x=st.lists(st.floats(-20, 20), min_size=3, max_size=3, unique=True),
    y=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
)
def test_vertex_never_leaves_its_bracket(x, y):
    x = sorted(x)
    assume(min(np.diff(x)) > 1e-3)
    assert x[0] <= parabola_vertex(x, y) <= x[2]


def test_fitted_optimum_refines_an_interior_argmin():
    best = fitted_optimum(GRID, 0.05 * (GRID + 3.3) ** 2)
    assert best == {"log2_lr": pytest.approx(-3.3, abs=1e-12), "grid_log2_lr": -3.0,
                    "fitted": True, "edge": None}  # fmt: skip


@pytest.mark.parametrize("x0, grid_point, edge", [(-9.0, -7.0, "low"), (2.5, 0.0, "high")])
def test_an_edge_optimum_is_flagged_and_not_extrapolated(x0, grid_point, edge):
    best = fitted_optimum(GRID, 0.05 * (GRID - x0) ** 2)
    assert best == {"log2_lr": grid_point, "grid_log2_lr": grid_point, "fitted": False,
                    "edge": edge}  # fmt: skip


def test_a_diverged_neighbour_keeps_the_grid_point():
    loss = 0.05 * (GRID + 3.3) ** 2
    loss[5] = math.inf  # 2^-2, right of the argmin 2^-3
    assert fitted_optimum(GRID, loss) == {"log2_lr": -3.0, "grid_log2_lr": -3.0,
                                          "fitted": False, "edge": None}  # fmt: skip


def test_fitted_optimum_of_one_lr_and_of_all_diverged():
    assert fitted_optimum(np.array([-3.0]), np.array([1.5]))["edge"] == "both"
    assert fitted_optimum(GRID, np.full(8, math.inf)) is None


def test_fitted_table_averages_seeds_and_counts_edges(tmp_path):
    optima = {(16, 0): -3.25, (16, 1): -3.75, (64, 0): -2.5, (64, 1): -9.0}  # -9: off the grid
    write_curves(tmp_path, lambda w, s, x: 2 + 0.05 * (x - optima[w, s]) ** 2, widths=(16, 64),
                 seeds=(0, 1))  # fmt: skip
    w16, w64 = fitted_best_lr_table(load_results(tmp_path)[0])
    assert (w16["fitted_log2_lr_mean"], w16["fitted_log2_lr_std"]) == pytest.approx((-3.5, 0.25))
    assert (w16["n_seeds"], w16["edge"], w16["edge_low"], w16["edge_high"]) == (2, False, 0, 0)
    # Seed 1's optimum is at the edge: it counts as 2^-7, and the width is flagged.
    assert (w64["fitted_log2_lr_mean"], w64["fitted_log2_lr_std"]) == pytest.approx((-4.75, 2.25))
    assert (w64["n_seeds"], w64["edge"], w64["edge_low"], w64["edge_high"]) == (2, True, 1, 0)
    assert [s["optimum"]["edge"] for s in w64["seeds"]] == [None, "low"]


def drift_row(width: int, mean: float, edge_low: int = 0, edge_high: int = 0) -> dict:
    return {"width": width, "fitted_log2_lr_mean": mean, "n_seeds": 1, "edge_low": edge_low,
            "edge_high": edge_high, "edge": bool(edge_low or edge_high)}  # fmt: skip


@pytest.mark.parametrize(
    "rows, drift, bound, edge_widths",
    [
        ([drift_row(16, -3), drift_row(64, -5.5), drift_row(256, -4)], 2.5, "measured", []),
        # The widest optimum at the low edge could only lie lower: the drift only grows.
        ([drift_row(16, -3), drift_row(256, -7, edge_low=1)], 4.0, "lower bound", [256]),
        ([drift_row(16, 0, edge_high=1), drift_row(256, -5)], 5.0, "lower bound", [16]),
        # Both at the low edge: the true optima may differ either way.
        (
            [drift_row(16, -7, edge_low=1), drift_row(256, -7, edge_low=1)],
            0.0,
            "uncertain",
            [16, 256],
        ),  # fmt: skip
        ([drift_row(16, -3), {**drift_row(64, math.nan), "n_seeds": 0}], math.nan, None, []),
    ],
)
def test_drift_over_widths_and_its_edges(rows, drift, bound, edge_widths):
    out = lr_drift(rows)
    assert out["drift"] == pytest.approx(drift, nan_ok=True)
    assert (out["drift_bound"], out["edge_widths"]) == (bound, edge_widths)


def curve(width: int, means: dict[float, float]) -> dict:
    return {
        "width": width,
        "log2_lr": np.array(list(means)),
        "mean": np.array(list(means.values())),
    }


NARROW = curve(16, {-4.0: 2.0, -3.0: 1.9, -2.0: 2.1})  # tuned at 2^-3


@pytest.mark.parametrize(
    "wider, better",
    [
        ([curve(64, {-3.0: 1.8}), curve(256, {-3.0: 1.7})], True),
        ([curve(64, {-3.0: 1.8}), curve(256, {-3.0: 1.8})], False),  # strictly
        ([curve(64, {-3.0: 1.95, -4.0: 1.0})], False),  # only the transferred lr counts
        ([curve(64, {-3.0: math.inf})], False),  # diverged there
        ([curve(64, {-4.0: 1.0})], None),  # not run there
        ([], None),  # one width
    ],
)
def test_wider_is_better_at_the_lr_tuned_at_the_narrowest(wider, better):
    out = wider_is_better([NARROW, *wider])
    assert (out["narrowest_width"], out["transferred_log2_lr"]) == (16, -3.0)
    assert out["wider_is_better"] is better
    assert out["losses"][16] == 1.9 and len(out["losses"]) == 1 + len(wider)


def test_no_transferred_lr_when_the_narrowest_width_always_diverged():
    out = wider_is_better([curve(16, {-3.0: math.inf}), curve(64, {-3.0: 1.0})])
    assert math.isnan(out["transferred_log2_lr"]) and out["wider_is_better"] is None


def test_panels_of_the_transfer_case(transfer_sweep):
    metrics = metrics_of(transfer_sweep[0])
    mup, sp = metrics[("mup", "adam")], metrics[("sp", "adam")]
    assert [r["fitted_log2_lr_mean"] for r in mup["widths"]] == pytest.approx([-3.3] * 3)
    assert [r["fitted_log2_lr_mean"] for r in sp["widths"]] == pytest.approx([-3.25, -4.25, -5.6])
    assert (mup["drift"], sp["drift"]) == pytest.approx((0.0, 2.35))
    assert mup["drift_bound"] == sp["drift_bound"] == "measured"
    # At 2^-3 (0.3 octaves from 2^-3.3), loss 2 - 0.01 log2(w) + 0.05 * 0.3^2.
    assert mup["transferred_log2_lr"] == -3.0 and mup["wider_is_better"] is True
    losses = [r["loss_at_transferred_lr"] for r in mup["widths"]]
    assert losses == pytest.approx([1.9645, 1.9445, 1.9245])
    assert sp["wider_is_better"] is False  # at 2^-3, SP's width 256 is far from its optimum


def test_verdict_when_mup_transfers(transfer_sweep):
    (adam,) = metrics_of(transfer_sweep[0])["verdicts"]
    assert adam["transfers"] is True and adam["notes"] == []
    assert adam["text"] == (
        "Adam: muP transfers: muP drift 0.00 octaves <= 1; SP drift 2.35 octaves >= 2; "
        "under muP wider is better at the transferred lr 2^-3 (best at width 16): "
        "losses 16: 1.9645, 64: 1.9445, 256: 1.9245."
    )


def test_verdict_names_every_failed_condition(tmp_path):
    worse = {16: 2.0, 256: 2.1}  # wider is worse under muP
    write_curves(tmp_path, quadratic({16: -3.0, 256: -4.5}, worse), widths=(16, 256))
    write_curves(tmp_path, quadratic({16: -3.0, 256: -3.5}), param="sp", widths=(16, 256))
    (adam,) = metrics_of(tmp_path)["verdicts"]
    assert adam["transfers"] is False
    assert [c["holds"] for c in adam["conditions"]] == [False, False, False]
    assert adam["text"] == (
        "Adam: muP does not transfer: muP drift 1.50 octaves > 1; SP drift 0.50 octaves < 2; "
        "under muP wider is not better at the transferred lr 2^-3 (best at width 16): "
        "losses 16: 2.0000, 256: 2.2125."
    )


def test_verdict_says_an_edge_sp_drift_is_a_lower_bound(tmp_path):
    write_curves(tmp_path, quadratic({16: -3.3, 256: -3.3}), widths=(16, 256))
    write_curves(tmp_path, quadratic({16: -3.0, 256: -9.0}), param="sp", widths=(16, 256))
    (adam,) = metrics_of(tmp_path)["verdicts"]
    # Measured 2^-3 .. 2^-7 (the grid's edge): 4 octaves at least.
    assert adam["transfers"] is True
    assert "SP drift 4.00 octaves >= 2" in adam["text"]
    assert adam["notes"] == [
        "The SP drift is a lower bound: optima at the grid edge at widths 256 (low 1/1)."
    ]
    assert adam["text"].endswith(adam["notes"][0])


def test_verdict_when_only_sp_fails_to_drift(tmp_path):
    """muP holds its optimum but SP barely moves: transfer is not shown, not refuted."""
    write_curves(tmp_path, quadratic({16: -3.3, 256: -3.3}), widths=(16, 256))
    write_curves(tmp_path, quadratic({16: -3.0, 256: -3.5}), param="sp", widths=(16, 256))
    (adam,) = metrics_of(tmp_path)["verdicts"]
    assert adam["transfers"] is False
    assert adam["text"].startswith(
        "Adam: transfer not shown (SP barely drifts at these widths): SP drift 0.50 octaves < 2."
        " Held: muP drift 0.00 octaves <= 1; "
    )


def test_verdict_without_sp_runs(tmp_path):
    write_curves(tmp_path, quadratic(MUP_OPTIMA), opt="sgd")
    (sgd,) = metrics_of(tmp_path)["verdicts"]
    assert sgd["transfers"] is False
    assert sgd["text"].startswith("SGD: muP does not transfer: no SP runs, so no SP drift. Held: ")


def test_transfer_json_is_strict_json_with_the_numbers(transfer_sweep):
    root, out = transfer_sweep
    assert out["transfer_json"] == root / "transfer.json"

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    doc = json.loads(out["transfer_json"].read_text(encoding="utf-8"), parse_constant=refuse)
    assert doc["schema"] == 1 and doc["rule"] == {"mup_drift_max": 1.0, "sp_drift_min": 2.0}
    sp, mup = doc["panels"]
    assert (sp["parametrization"], mup["parametrization"]) == ("sp", "mup")
    assert sp["drift"] == pytest.approx(2.35) and mup["wider_is_better"] is True
    assert mup["widths"][0]["fitted_log2_lr_mean"] == pytest.approx(-3.3)
    assert mup["widths"][0]["seeds"][0]["optimum"]["fitted"] is True
    assert doc["verdicts"][0]["transfers"] is True
    assert doc["verdicts"][0]["text"] == out["transfer"]["verdicts"][0]["text"]


def test_transfer_json_writes_a_diverged_loss_as_null(tmp_path):
    loss = quadratic({16: -3.3, 64: -3.3})
    write_curves(tmp_path, lambda w, s, x: math.inf if (w, x) == (64, -3) else loss(w, s, x),
                 widths=(16, 64))  # fmt: skip
    doc = json.loads(transfer_json(transfer_metrics(load_results(tmp_path)[0]), tmp_path))
    w16, w64 = doc["panels"][0]["widths"]
    assert (w64["loss_at_transferred_lr"], w64["diverged_at_transferred_lr"]) == (None, True)
    assert w16["diverged_at_transferred_lr"] is False
    assert doc["panels"][0]["wider_is_better"] is False


def test_report_md_has_the_transfer_section(transfer_sweep):
    text = transfer_sweep[1]["report_md"].read_text(encoding="utf-8")
    section = text.split("## Learning-rate transfer", 1)[1]
    rows = md_rows(section)
    assert rows[0] == ["panel", "width", "fitted log2 best lr", "seeds", "edge",
                       "loss at transferred lr"]  # fmt: skip
    assert ["muP, Adam", "256", "-3.30 ± 0.00", "2", "—", "1.9245"] in rows
    assert ["SP, Adam", "256", "-5.60 ± 0.00", "2", "—", "2.2580"] in rows
    assert (
        "- SP, Adam: drift 2.35 octaves; transferred lr 2^-3 (best at width 16); "
        "wider is better there: no"
    ) in section
    assert "- Adam: muP transfers: muP drift 0.00 octaves <= 1;" in section


def test_main_prints_the_transfer_table_and_verdicts(transfer_sweep, tmp_path, capsys):
    assert report.main(runs_dir=str(transfer_sweep[0]), out_dir=str(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "\nLearning-rate transfer\n" in printed
    assert "- Adam: muP transfers: " in printed
    assert printed.rstrip().endswith(f"{tmp_path / 'transfer.json'}")


def test_plot_marks_each_widths_fitted_optimum(transfer_sweep):
    sp, mup = transfer_sweep[1]["panels"]
    assert mup["fitted"] == pytest.approx({16: -3.3, 64: -3.3, 256: -3.3})
    assert sp["fitted"] == pytest.approx({16: -3.25, 64: -4.25, 256: -5.6})


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
        ('{"schema": 3}', "schema is 3; this version reads schema 1 or 2"),
        ({"status": "running"}, "status 'running' is not one of completed, diverged, failed"),
        ({"hparams": {"seed": 0}}, "hparams lacks parametrization, optimizer, hidden_size"),
        ({"hparams.learning_rate": "0.1"}, "hparams.learning_rate '0.1' is not a positive"),
        ({"hparams.learning_rate": 0}, "hparams.learning_rate 0 is not a positive"),
        ({"metrics.val/loss": "low"}, "metrics.val/loss 'low' is neither a number nor null"),
    ],
)
def test_malformed_result_is_skipped_with_a_warning_naming_it(tmp_path, content, problem):
    write_result(tmp_path, "G", "good")
    bad = write_result(tmp_path, "G", "bad")
    if isinstance(content, dict):  # a change to a valid result.json
        result = json.loads(bad.read_text())
        for key, value in content.items():
            section, _, field = key.partition(".")
            if field:
                result[section][field] = value
            else:
                result[key] = value
        content = json.dumps(result)
    bad.write_text(content, encoding="utf-8")
    results, warnings = load_results(tmp_path)
    assert [r["label"] for r in results] == ["good"]
    assert len(warnings) == 1 and warnings[0].startswith(f"skipped {bad}: ")
    assert problem in warnings[0]


def test_report_lists_skipped_files(tmp_path):
    write_result(tmp_path, "G", "good")
    bad = tmp_path / "G" / "bad" / "result.json"
    bad.parent.mkdir()
    bad.write_text("", encoding="utf-8")
    out = write_report(tmp_path)
    assert out["warnings"] == [
        f"skipped {bad}: not valid JSON (Expecting value: line 1 column 1 (char 0))"
    ]
    assert f"- {out['warnings'][0]}" in out["report_md"].read_text(encoding="utf-8")
    assert "Skipped 1 unreadable result.json" in out["table"]


@pytest.mark.parametrize("make", [True, False])
def test_empty_or_missing_runs_dir_is_a_clear_error(tmp_path, make):
    runs = tmp_path / "runs"
    if make:
        runs.mkdir()
    expected = (
        f"no result.json found below {runs}; run `python cli.py sweep --runs_dir {runs}` first"
    )
    with pytest.raises(ValueError) as info:
        write_report(runs)
    assert str(info.value) == expected and isinstance(info.value, ConfigError)


def test_only_malformed_files_is_an_error(tmp_path):
    path = tmp_path / "G" / "x" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no readable result.json below .*: all 1 were skipped"):
        write_report(tmp_path)


# --- writing --------------------------------------------------------------------------


def test_outputs_go_to_out_dir_with_no_temp_files(sweep, tmp_path):
    root = sweep[0]
    outputs = ["report.md", "results.csv", "transfer.json", "transfer.png"]
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == outputs
    runs = tmp_path / "runs"
    write_result(runs, "G", "x")
    write_report(runs, out_dir=tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == outputs
    assert sorted(os.listdir(runs)) == ["G"]


def test_a_failed_replace_leaves_the_previous_report_intact(tmp_path, monkeypatch):
    write_result(tmp_path, "G", "x")
    (tmp_path / "report.md").write_text("previous report", encoding="utf-8")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "report.md":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path)
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G", "report.md", "results.csv"]


def test_a_failed_plot_leaves_the_previous_png_and_no_temp_file(tmp_path, monkeypatch):
    write_result(tmp_path, "G", "x")
    (tmp_path / "transfer.png").write_bytes(b"previous")

    def plot(results, out):
        out.write(b"half a png")
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "plot_transfer", plot)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(tmp_path)
    assert (tmp_path / "transfer.png").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "G", "report.md", "results.csv", "transfer.png"
    ]  # fmt: skip


# --- the command ----------------------------------------------------------------------


def test_main_prints_the_table_and_warnings(tmp_path, capsys):
    write_sweep(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{", encoding="utf-8")
    assert report.main(runs_dir=str(tmp_path), out_dir=str(tmp_path / "r")) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("9 runs: 6 completed, 2 diverged, 1 failed. Skipped 1")
    assert ["mup", "sgd", "16", "0.0625", "-4.00 ± 1.00", "1.6500 ± 0.0500", "2"] in md_rows(
        printed.out
    )
    assert printed.err.startswith(f"warning: skipped {tmp_path / 'broken' / 'result.json'}: ")
    assert (tmp_path / "r" / "transfer.png").is_file()


def test_cli_report_on_an_empty_dir_is_one_line(tmp_path, capsys):
    # `cli.py report` builds its flags from report.main's signature and docstring.
    assert cli.main(["report", "--runs_dir", str(tmp_path)]) == cli.EXIT_CONFIG_ERROR
    assert capsys.readouterr().err == (
        f"error: no result.json found below {tmp_path}; "
        f"run `python cli.py sweep --runs_dir {tmp_path}` first\n"
    )


@pytest.mark.parametrize(
    "flag, problem",
    [
        ("--runs_dir", "runs_dir {file} is a file, not a folder; give the sweep's runs folder"),
        ("--out_dir", "out_dir {file} is a file, not a folder; give a folder (made if missing)"),
    ],
)
def test_cli_report_on_a_file_is_one_line(tmp_path, capsys, flag, problem):
    runs = tmp_path / "runs"
    write_result(runs, "G", "x")
    file = tmp_path / "file.txt"
    file.write_text("not a folder", encoding="utf-8")
    args = {"--runs_dir": str(runs), flag: str(file)}
    argv = ["report", *(item for pair in args.items() for item in pair)]
    assert cli.main(argv) == cli.EXIT_CONFIG_ERROR
    assert capsys.readouterr().err == f"error: {problem.format(file=file)}\n"
    assert file.read_text(encoding="utf-8") == "not a folder"


def test_an_out_dir_below_a_file_is_a_clear_error(tmp_path):
    write_result(tmp_path / "runs", "G", "x")
    (tmp_path / "file").write_text("", encoding="utf-8")
    out = tmp_path / "file" / "report"
    with pytest.raises(ConfigError, match=f"^cannot make out_dir {out}: Not a directory$"):
        write_report(tmp_path / "runs", out)
