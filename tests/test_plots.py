"""The transfer plot: one panel per pair, its size, the clip line, the fitted ticks; the
study's arms plot."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from lstm_lightning import plots
from lstm_lightning.plots import ARM_STYLE, plot_arms, plot_hazards, y_limits
from lstm_lightning.report import write_report


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_transfer_png_has_one_panel_per_pair(report_sweep):
    out = report_sweep[1]
    meta = out["panels"]
    assert [(m["parametrization"], m["optimizer"]) for m in meta] == [
        ("sp", "adam"),
        ("mup", "sgd"),
    ]
    assert meta[1]["widths"] == [16, 32] and meta[1]["diverged"] == 2
    # A 2 x 2 grid (sp, mup) x (sgd, adam), two cells left out; 5 in per panel + legend.
    w, h = plots.PANEL_SIZE
    assert png_size(out["transfer_png"]) == (
        round((2 * w + 1) * plots.DPI),
        round(2 * h * plots.DPI),
    )


def test_one_pair_gives_one_panel(tmp_path, fake_runs):
    for e in (-3, -2):
        fake_runs.write_result(
            tmp_path, "G", f"lr{e}", opt="adam", lr=2.0**e, val_loss=2.0 + e / 10
        )
    out = write_report(tmp_path)
    assert [(m["parametrization"], m["optimizer"]) for m in out["panels"]] == [("mup", "adam")]
    w, h = plots.PANEL_SIZE
    assert png_size(out["transfer_png"]) == (round((w + 1) * plots.DPI), round(h * plots.DPI))


def test_y_limits_clip_an_outlier_only():
    bulk = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
    curve = lambda mean: {"mean": mean, "lo": mean}  # noqa: E731
    assert y_limits([curve(np.append(bulk, 40.0))]) == (1.0, 1.8)
    assert y_limits([curve(np.append(bulk, 2.0))]) == (1.0, 2.0)
    assert y_limits([curve(np.array([np.inf]))]) == (0.0, 1.0)  # only divergences


def test_plot_marks_each_widths_fitted_optimum(transfer_sweep):
    sp, mup = transfer_sweep[1]["panels"]
    assert mup["fitted"] == pytest.approx({16: -3.3, 64: -3.3, 256: -3.3})
    assert sp["fitted"] == pytest.approx({16: -3.25, 64: -4.25, 256: -5.6})


def arm(corpus, width, name, losses):
    return {"corpus": corpus, "width": width, "arm": name, "n_seeds": len(losses),
            "loss_mean": sum(losses) / len(losses) if losses else None,
            "loss_min": min(losses, default=None), "loss_max": max(losses, default=None)}  # fmt: skip


def hazard(corpus, name, losses, clear, base="A2", width=256):
    return {**arm(corpus, width, f"{base}, {name}", losses), "base": base, "hazard": name,
            "versus_base": {"clear": clear}}  # fmt: skip


def test_hazards_plot_draws_each_change_against_its_arm():
    bases = [arm("stdlib", 256, "A2", [1.23, 1.24, 1.25]), arm("prose", 256, "A2", [1.34])]
    rows = [hazard("stdlib", "sp", [1.40], True), hazard("stdlib", "eps", [1.24, 1.25], False),
            hazard("prose", "sp", [1.30, 1.32], True), hazard("prose", "eps", [], False),
            hazard("prose", "orphan", [1.5], True, base="A")]  # fmt: skip
    colors = []
    with mock.patch("matplotlib.axes.Axes.errorbar",
                    lambda ax, x, y, color, **kw: colors.append(color)):  # fmt: skip
        meta = plot_hazards(rows, bases, io.BytesIO())
    # gaps are the change's mean minus its own arm's, at its width; a change with no
    # finished seed, or whose arm has none, is not drawn
    assert meta == [
        {"corpus": "stdlib", "changes": {"sp": pytest.approx(0.16), "eps": pytest.approx(0.005)}},
        {"corpus": "prose", "changes": {"sp": pytest.approx(-0.03)}},
    ]
    assert colors == ["tab:red", "0.35", "tab:green"]  # hurts, within the spread, helps
    out = io.BytesIO()
    plot_hazards(rows, bases, out)
    assert out.getvalue().startswith(b"\x89PNG")
    assert plot_hazards([], bases, io.BytesIO()) == []
    # a row per change drawn somewhere, in the given order ("orphan": its arm A has no row)
    ticks = []
    with mock.patch("matplotlib.axes.Axes.set_yticks", lambda ax, t, labels: ticks.append(labels)):
        plot_hazards(rows, bases, io.BytesIO())
        # the same change on two arms: two rows, each against its own arm
        bases.append(arm("stdlib", 256, "A", [1.50]))
        two = plot_hazards([hazard("stdlib", "sp", [1.40], True, base="A"), *rows[:1]], bases,
                           io.BytesIO())  # fmt: skip
    assert ticks == [["sp", "eps"], ["A: sp", "A2: sp"]]
    assert two == [{"corpus": "stdlib",
                    "changes": {"A: sp": pytest.approx(-0.1), "A2: sp": pytest.approx(0.16)}}]  # fmt: skip


def test_arms_plot_draws_each_arm_at_its_finished_widths():
    rows = [arm("stdlib", 256, "A", [1.42, 1.43]), arm("stdlib", 512, "A", [1.40]),
            arm("stdlib", 256, "C", [1.45, 1.47, 1.46]), arm("stdlib", 512, "C", []),
            arm("prose", 256, "B", [2.0])]  # fmt: skip
    out = io.BytesIO()
    meta = plot_arms(rows, out)
    assert meta == [
        {"corpus": "stdlib", "arms": {"A": [256, 512], "C": [256]}},  # C at 512: no seed yet
        {"corpus": "prose", "arms": {"B": [256]}},
    ]
    assert out.getvalue().startswith(b"\x89PNG")
    assert plot_arms([], io.BytesIO()) == []
    # the one legend names the arms of every panel, not only the last's
    legend = []
    with mock.patch(
        "matplotlib.axes.Axes.legend", lambda ax, h, labels, **kw: legend.append(list(labels))
    ):
        plot_arms(rows, io.BytesIO())
    assert legend == [[ARM_STYLE[a][2] for a in ("A", "C", "B")]]
    # other lines than the study's arms (the diagnostics' width rules), in the given order
    rules = {"sp": ("tab:red", "v", "SP"), "mup": ("tab:green", "o", "muP")}
    rows = [arm("stdlib", 64, "mup", [1.6]), arm("stdlib", 64, "sp", [1.5]),
            arm("stdlib", 64, "A", [1.7])]  # fmt: skip
    assert plot_arms(rows, io.BytesIO(), styles=rules) == [
        {"corpus": "stdlib", "arms": {"sp": [64], "mup": [64]}}
    ]
