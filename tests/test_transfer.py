"""Learning-rate transfer, the math: best lrs per seed and width, the parabola vertex,
fitted optima and their edges, drift, wider-is-better, the verdicts."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lstm_lightning.report import load_results
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

GRID = np.arange(-7.0, 1.0)  # (8,) log2 lrs 2^-7 .. 2^0, as the sweeps use
SEEDED = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def metrics_of(root) -> dict:
    """transfer_metrics keyed by pair: {(parametrization, optimizer): panel}, verdicts."""
    metrics = transfer_metrics(load_results(root)[0])
    panels = {(p["parametrization"], p["optimizer"]): p for p in metrics["panels"]}
    return {**panels, "verdicts": metrics["verdicts"]}


def drift_row(width: int, mean: float, edge_low: int = 0, edge_high: int = 0) -> dict:
    return {"width": width, "fitted_log2_lr_mean": mean, "n_seeds": 1, "edge_low": edge_low,
            "edge_high": edge_high, "edge": bool(edge_low or edge_high)}  # fmt: skip


def curve(width: int, means: dict[float, float]) -> dict:
    return {
        "width": width,
        "log2_lr": np.array(list(means)),
        "mean": np.array(list(means.values())),
    }


NARROW = curve(16, {-4.0: 2.0, -3.0: 1.9, -2.0: 2.1})  # tuned at 2^-3


# --- the best-lr table --------------------------------------------------------------


def test_best_lr_per_seed_then_mean_and_population_std(report_sweep):
    results, _ = load_results(report_sweep[0])
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


def test_diverged_is_never_best_even_with_a_low_stale_val_loss(report_sweep):
    results, _ = load_results(report_sweep[0])
    stale = next(r for r in results if r["label"] == "f_w16_lr-1_s1")
    assert stale["metrics"]["val/loss"] == 0.10 and run_loss(stale) == math.inf
    assert all(row["best_log2_lr_mean"] != -1.0 for row in best_lr_table(results))


def test_a_seed_whose_every_lr_diverged_has_no_best(tmp_path, fake_runs):
    fake_runs.write_result(tmp_path, "G", "x0", lr=0.5, status="diverged", val_loss=None)
    fake_runs.write_result(tmp_path, "G", "x1", lr=0.25, status="diverged", val_loss=None)
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


def test_transfer_curves_keep_diverged_runs(report_sweep):
    curves = transfer_curves(load_results(report_sweep[0])[0])
    assert list(curves) == [("sp", "adam"), ("mup", "sgd")]
    w16, w32 = curves[("mup", "sgd")]
    assert w16["width"] == 16 and w32["width"] == 32
    np.testing.assert_array_equal(w16["log2_lr"], [-5, -4, -3, -2, -1])  # (L,)
    np.testing.assert_array_equal(w16["diverged"], [False, False, False, True, True])
    np.testing.assert_array_equal(w16["n_seeds"], [1, 1, 2, 1, 1])
    np.testing.assert_allclose(w16["mean"], [1.6, 1.8, 1.8, np.inf, np.inf])
    assert (w16["lo"][2], w16["hi"][2]) == pytest.approx((1.7, 1.9))  # the two seeds at 2^-3
    np.testing.assert_array_equal(w32["log2_lr"], [-4])  # the failed run is not a point


# --- the fitted optimum -------------------------------------------------------------


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


def test_fitted_table_averages_seeds_and_counts_edges(tmp_path, fake_runs):
    optima = {(16, 0): -3.25, (16, 1): -3.75, (64, 0): -2.5, (64, 1): -9.0}  # -9: off the grid
    loss = lambda w, s, x: 2 + 0.05 * (x - optima[w, s]) ** 2  # noqa: E731
    fake_runs.write_curves(tmp_path, loss, widths=(16, 64), seeds=(0, 1))
    w16, w64 = fitted_best_lr_table(load_results(tmp_path)[0])
    assert (w16["fitted_log2_lr_mean"], w16["fitted_log2_lr_std"]) == pytest.approx((-3.5, 0.25))
    assert (w16["n_seeds"], w16["edge"], w16["edge_low"], w16["edge_high"]) == (2, False, 0, 0)
    # Seed 1's optimum is at the edge: it counts as 2^-7, and the width is flagged.
    assert (w64["fitted_log2_lr_mean"], w64["fitted_log2_lr_std"]) == pytest.approx((-4.75, 2.25))
    assert (w64["n_seeds"], w64["edge"], w64["edge_low"], w64["edge_high"]) == (2, True, 1, 0)
    assert [s["optimum"]["edge"] for s in w64["seeds"]] == [None, "low"]


# --- drift and wider-is-better ------------------------------------------------------


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


# --- verdicts -----------------------------------------------------------------------


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


def test_verdict_names_every_failed_condition(tmp_path, fake_runs):
    worse = {16: 2.0, 256: 2.1}  # wider is worse under muP
    fake_runs.write_curves(
        tmp_path, fake_runs.quadratic({16: -3.0, 256: -4.5}, worse), widths=(16, 256)
    )
    fake_runs.write_curves(
        tmp_path, fake_runs.quadratic({16: -3.0, 256: -3.5}), param="sp", widths=(16, 256)
    )
    (adam,) = metrics_of(tmp_path)["verdicts"]
    assert adam["transfers"] is False
    assert [c["holds"] for c in adam["conditions"]] == [False, False, False]
    assert adam["text"] == (
        "Adam: muP does not transfer: muP drift 1.50 octaves > 1; SP drift 0.50 octaves < 2; "
        "under muP wider is not better at the transferred lr 2^-3 (best at width 16): "
        "losses 16: 2.0000, 256: 2.2125."
    )


def test_verdict_says_an_edge_sp_drift_is_a_lower_bound(tmp_path, fake_runs):
    fake_runs.write_curves(tmp_path, fake_runs.quadratic({16: -3.3, 256: -3.3}), widths=(16, 256))
    fake_runs.write_curves(
        tmp_path, fake_runs.quadratic({16: -3.0, 256: -9.0}), param="sp", widths=(16, 256)
    )
    (adam,) = metrics_of(tmp_path)["verdicts"]
    # Measured 2^-3 .. 2^-7 (the grid's edge): 4 octaves at least.
    assert adam["transfers"] is True
    assert "SP drift 4.00 octaves >= 2" in adam["text"]
    assert adam["notes"] == [
        "The SP drift is a lower bound: optima at the grid edge at widths 256 (low 1/1)."
    ]
    assert adam["text"].endswith(adam["notes"][0])


def test_verdict_when_only_sp_fails_to_drift(tmp_path, fake_runs):
    """muP holds its optimum but SP barely moves: transfer is not shown, not refuted."""
    fake_runs.write_curves(tmp_path, fake_runs.quadratic({16: -3.3, 256: -3.3}), widths=(16, 256))
    fake_runs.write_curves(
        tmp_path, fake_runs.quadratic({16: -3.0, 256: -3.5}), param="sp", widths=(16, 256)
    )
    (adam,) = metrics_of(tmp_path)["verdicts"]
    assert adam["transfers"] is False
    assert adam["text"].startswith(
        "Adam: transfer not shown (SP barely drifts at these widths): SP drift 0.50 octaves < 2."
        " Held: muP drift 0.00 octaves <= 1; "
    )


def test_verdict_without_sp_runs(tmp_path, fake_runs):
    fake_runs.write_curves(tmp_path, fake_runs.quadratic(fake_runs.MUP_OPTIMA), opt="sgd")
    (sgd,) = metrics_of(tmp_path)["verdicts"]
    assert sgd["transfers"] is False
    assert sgd["text"].startswith("SGD: muP does not transfer: no SP runs, so no SP drift. Held: ")


def test_the_math_draws_nothing():
    # transfer is pure: importing it loads no plotting library (plots.py holds matplotlib).
    code = "import sys, lstm_lightning.transfer; print('matplotlib' in sys.modules)"
    root = Path(__file__).parent.parent  # python -c puts the folder it runs in on sys.path
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
