"""The report on studies (cli.py tune) and transfers (cli.py transfer): the best trial and
the top-10 order, importance or why not, compute sums, TP5's table per width with the
direct-tuning rows, studies.json strict and documented, the slice plot, and a tiny real
study end to end."""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lstm_lightning import report, studies, study
from lstm_lightning.plots import plot_slices
from lstm_lightning.report import write_report
from tests.conftest import TINY_BASE, run_cli

ROOT = Path(__file__).parent.parent


def md_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, padding stripped."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


def params(lr: float, std: float = 1.0, zero: bool = True) -> dict:
    return {"learning_rate": lr, "init_std": std, "readout_zero_init": zero}


def lr_trials(n: int) -> list[tuple]:
    """``n`` complete trials whose loss is set by the lr (best at 10^-2), cost 1, 2, ..., n;
    trial 3 fails (no value)."""
    trials = []
    for i in range(n):
        lr = 10.0 ** (-4 + 3.4 * ((7 * i) % n) / n)
        loss = 1.5 + (math.log10(lr) + 2) ** 2 + 0.001 * i
        trials.append((params(lr, 0.25 + 0.3 * i, i % 2 == 0), None if i == 3 else loss, i + 1.0))
    return trials


def refuse(token: str):
    raise AssertionError(f"non-strict JSON token {token}")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, fake_runs):
    """Study ``s`` (proxy width 32, 13 trials, trial 3 failed) transferred to widths 128 and
    256 (3 seeds; one diverged at 256); study ``big`` tuned at 128 with its own transfer
    there; study ``wide`` tuned at 256 with none; study ``few`` (3 trials) at width 64.
    And the written report. Read only."""
    root = tmp_path_factory.mktemp("studies")
    fake_runs.write_study(root, "s", lr_trials(13))
    fake_runs.write_transfer(root, "s.transfer", {128: [1.5, 1.7, 1.6], 256: [1.4, None, 1.2]})
    fake_runs.write_study(root, "big", lr_trials(6), proxy_width=128)
    fake_runs.write_transfer(root, "big.transfer", {128: [1.45, 1.55]}, core_seconds=400.0)
    fake_runs.write_study(root, "wide", [(params(0.01), 1.3, 50.0)], proxy_width=256)
    few = [(params(0.01), 2.0, 1.0), (params(0.02), 2.1, 1.0), (params(0.03), 1.9, None)]
    fake_runs.write_study(root, "few", few, proxy_width=64)
    return root, write_report(root)


def by_name(out: dict) -> dict:
    return {s["study"]: s for s in out["studies"]["studies"]}


# --- studies --------------------------------------------------------------------------------


def test_best_trial_and_the_top_ten_in_order(tuned):
    root, out = tuned
    s = by_name(out)["s"]
    values = {n: v for n, (_, v, _) in enumerate(lr_trials(13))}
    complete = sorted((v, n) for n, v in values.items() if v is not None)
    assert [t["number"] for t in s["trials"]] == [n for _, n in complete] + [3]
    assert s["trials"][-1]["state"] == "fail" and s["trials"][-1]["value"] is None
    best_number = complete[0][1]
    assert s["best"]["number"] == best_number and s["best"]["value"] == complete[0][0]
    assert s["best"]["params"] == lr_trials(13)[best_number][0]
    assert s["counts"]["complete"] == 12 and s["counts"]["fail"] == 1
    md = out["report_md"].read_text(encoding="utf-8")
    section = md.split("### Study `s`", 1)[1].split("### ", 1)[0]
    trial_rows = [r for r in md_rows(section) if r[0].isdigit() and r[1] in ("complete", "fail")]
    assert [int(r[0]) for r in trial_rows] == [n for _, n in complete[:10]]
    assert f"Best trial: {best_number} (`trial_{best_number:04d}`)" in section


def test_importance_ranks_the_hyperparameter_that_drives_the_loss(tuned):
    s = by_name(tuned[1])["s"]
    assert set(s["importance"]) == set(studies_space())
    assert max(s["importance"], key=s["importance"].get) == "learning_rate"
    md = tuned[1]["report_md"].read_text(encoding="utf-8")
    assert ["learning_rate", f"{s['importance']['learning_rate']:.3f}"] in md_rows(md)


def studies_space() -> dict:
    return {"learning_rate", "init_std", "readout_zero_init"}


def test_too_few_complete_trials_for_importance_is_said_not_failed(tuned):
    few = by_name(tuned[1])["few"]
    assert few["importance"] is None
    assert few["importance_note"].startswith("too few complete trials")
    assert f"- {few['importance_note']}" in tuned[1]["report_md"].read_text(encoding="utf-8")


def test_tuning_compute_is_the_sum_of_the_trials_core_seconds(tuned):
    found = by_name(tuned[1])
    assert found["s"]["tuning_core_seconds"] == sum(range(1, 14))  # a failed trial costs too
    assert found["few"]["tuning_core_seconds"] == 2.0  # a null core_seconds is not counted
    assert found["few"]["tuning_runs"] == 2


def test_an_unreadable_study_is_a_warning_not_a_failure(tmp_path, fake_runs):
    fake_runs.write_study(tmp_path, "s", lr_trials(2))
    (tmp_path / "s" / "study.yaml").write_text("[unclosed", encoding="utf-8")
    out = write_report(tmp_path)
    assert any(w.startswith(f"skipped study {tmp_path / 's'}") for w in out["warnings"])
    assert out["studies"]["studies"] == []


# --- transfers ------------------------------------------------------------------------------


def rows_at(out: dict, group: str, width: int) -> list[dict]:
    (table,) = [t for t in out["studies"]["transfers"] if t["group"] == group]
    (entry,) = [w for w in table["widths"] if w["width"] == width]
    return entry["rows"]


def test_transfer_loss_is_mean_and_std_over_seeds_per_width(tuned):
    out = tuned[1]
    moved = rows_at(out, "s.transfer", 128)[0]
    assert moved["kind"] == "transferred" and moved["tuned_at_width"] == 32
    assert moved["loss_mean"] == pytest.approx(1.6)
    assert moved["loss_std"] == pytest.approx(math.sqrt(0.02 / 3))  # population std
    assert (moved["n_seeds"], moved["n_runs"], moved["n_diverged"]) == (3, 3, 0)
    assert moved["training_core_seconds"] == 300.0
    assert moved["tuning_core_seconds"] == sum(range(1, 14))
    assert moved["total_core_seconds"] == 300.0 + sum(range(1, 14))
    wide = rows_at(out, "s.transfer", 256)[0]  # the diverged seed is counted, not averaged
    assert wide["loss_mean"] == pytest.approx(1.3) and wide["loss_std"] == pytest.approx(0.1)
    assert (wide["n_seeds"], wide["n_runs"], wide["n_diverged"]) == (2, 3, 1)
    rows = md_rows(out["report_md"].read_text(encoding="utf-8"))
    assert ["128", "transferred from s", "s.transfer", "32", "mup", "1.6000 ± 0.0816", "3/3",
            "300", "91.0", "391"] in rows  # fmt: skip


def test_studies_tuned_at_the_target_width_are_rows_of_their_own(tuned):
    out = tuned[1]
    moved, direct = rows_at(out, "s.transfer", 128)
    assert (direct["kind"], direct["study"], direct["runs"]) == (
        "tuned here",
        "big",
        "big.transfer",
    )
    assert direct["loss_mean"] == pytest.approx(1.5) and direct["training_core_seconds"] == 800.0
    assert direct["tuning_core_seconds"] == sum(range(1, 7)) and direct["tuned_at_width"] == 128
    _, wide = rows_at(out, "s.transfer", 256)  # no transfer of its own: its best trial's run
    assert (wide["study"], wide["runs"], wide["loss_mean"]) == ("wide", "wide/trial_0000", 1.3)
    assert wide["training_core_seconds"] == 50.0 and wide["n_runs"] == 1
    (only,) = rows_at(out, "big.transfer", 128)  # its own study is the transferred row
    assert only["kind"] == "transferred"


def test_no_direct_rows_without_a_study_at_that_width(tmp_path, fake_runs):
    fake_runs.write_study(tmp_path, "s", lr_trials(2))
    fake_runs.write_transfer(tmp_path, "s.transfer", {128: [1.5]})
    fake_runs.write_transfer(tmp_path, "lone.transfer", {128: [1.6]})  # --from best.yaml
    out = write_report(tmp_path)
    assert [r["study"] for r in rows_at(out, "s.transfer", 128)] == ["s"]
    (lone,) = rows_at(out, "lone.transfer", 128)
    assert lone["tuning_core_seconds"] is None and lone["total_core_seconds"] is None
    assert "study not in this folder" in out["report_md"].read_text(encoding="utf-8")


# --- studies.json -----------------------------------------------------------------------------


def test_studies_json_is_strict_and_holds_the_tables(tuned):
    root, out = tuned
    text = (root / "studies.json").read_text(encoding="utf-8")
    doc = json.loads(text, parse_constant=refuse)
    assert doc["schema"] == studies.SCHEMA and doc["runs_dir"] == str(root)
    assert [s["study"] for s in doc["studies"]] == ["big", "few", "s", "wide"]
    assert [t["group"] for t in doc["transfers"]] == ["big.transfer", "s.transfer"]
    assert doc["transfers"] == json.loads(json.dumps(out["studies"]["transfers"]))


def test_studies_json_writes_nan_as_null(tmp_path, fake_runs):
    fake_runs.write_transfer(tmp_path, "s.transfer", {64: [1.5]})
    fake_runs.write_transfer(tmp_path, "s.transfer", {128: [None]})  # every seed diverged
    out = write_report(tmp_path)
    out["studies"]["transfers"][0]["widths"][1]["rows"][0]["loss_mean"] = math.nan
    text = studies.studies_json([], out["studies"]["transfers"], tmp_path, [])
    row = json.loads(text, parse_constant=refuse)["transfers"][0]["widths"][1]["rows"][0]
    assert row["loss_mean"] is None and row["n_diverged"] == 1


def keys_of(doc: dict) -> set[str]:
    """Every key of studies.json: its top level, a study, a trial, a transfer, a width, a row."""
    study, transfer = doc["studies"][0], doc["transfers"][0]
    parts = [doc, study, study["trials"][0], study["proxy"], transfer, transfer["widths"][0]]
    return {k for part in [*parts, transfer["widths"][0]["rows"][0]] for k in part}


def test_the_schema_doc_lists_every_key_of_studies_json(tuned):
    doc = json.loads((tuned[0] / "studies.json").read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "result_schema.md").read_text(encoding="utf-8")
    section = page.split("## `studies.json`", 1)[1].split("\n## ", 1)[0]
    prose = section.split("```json", 1)[1].split("```", 1)[1]  # below the example
    listed = set(re.findall(r"`(\w+)`", prose))
    assert keys_of(doc) - listed == set()


# --- the slice plot -------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_slice_plot_per_study_one_panel_per_hyperparameter(tuned, tmp_path):
    root, out = tuned
    for name in ("s", "big", "wide", "few"):
        width, height = png_size(root / f"slice_{name}.png")
        assert 400 <= width <= 3000 and 200 <= height <= 2000
    assert "![slice plot of s](slice_s.png)" in out["report_md"].read_text(encoding="utf-8")
    meta = plot_slices(by_name(out)["s"], tmp_path / "p.png")
    assert [(m["key"], m["scale"], m["points"], m["clipped"]) for m in meta] == [
        ("learning_rate", "log", 12, 0), ("init_std", "linear", 12, 0),
        ("readout_zero_init", "categorical", 12, 0),
    ]  # fmt: skip


def test_the_slice_plot_clips_a_huge_loss(tuned, tmp_path):
    study = json.loads(json.dumps(by_name(tuned[1])["s"]))
    study["trials"][5]["value"] = 1.0e30  # a trial that all but diverged
    meta = plot_slices(study, tmp_path / "p.png")
    assert [m["clipped"] for m in meta] == [1, 1, 1]


def test_without_studies_or_transfers_no_studies_json(tmp_path, fake_runs):
    fake_runs.write_result(tmp_path, "G", "x")
    out = write_report(tmp_path)
    assert not (tmp_path / "studies.json").exists() and not list(tmp_path.glob("slice_*"))
    assert out["studies"]["studies"] == out["studies"]["transfers"] == []
    assert "## Studies" not in out["report_md"].read_text(encoding="utf-8")


def test_main_prints_each_study_and_transfer(tuned, tmp_path, capsys):
    assert report.main(runs_dir=str(tuned[0]), out_dir=str(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "\nStudy s\n" in printed and "\nTransfer s.transfer\n" in printed
    assert printed.rstrip().endswith(str(tmp_path / "studies.json"))


def test_the_analysis_reads_what_tune_writes_and_draws_nothing():
    assert (studies.DEFINITION, studies.JOURNAL) == (study.DEFINITION, study.JOURNAL)
    assert studies.label(7) == study.label(7) and studies.label(12345) == study.label(12345)
    # pure: importing it loads neither a plotting library nor Lightning
    code = "import sys, lstm_lightning.studies as s; print(sorted({'matplotlib', 'lightning'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- a tiny real study ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_tune_transfer_and_report_run_end_to_end(tmp_path):
    """The README's three commands on a tiny proxy: tune, carry the best trial to two
    wider widths, and report the study and the transfer."""
    base, space = tmp_path / "base.yaml", tmp_path / "space.yaml"
    base.write_text(yaml.safe_dump(TINY_BASE))
    space.write_text(yaml.safe_dump({"learning_rate": {"low": 1e-3, "high": 0.1, "log": True}}))
    runs = tmp_path / "runs"
    tune = ["tune", "--config", str(base), "--space", str(space), "--study", "tiny"]
    done = run_cli(*tune, "--trials", "3", "--runs_dir", str(runs), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    carry = ["transfer", "--study", "tiny", "--widths", "24,32", "--seeds", "0"]
    done = run_cli(*carry, "--runs_dir", str(runs), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    best = yaml.safe_load((runs / "tiny" / "best.yaml").read_text(encoding="utf-8"))
    assert set(best["model"]) >= {"learning_rate", "base_hidden_size"}
    shown = run_cli("report", "--runs_dir", str(runs), timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "\nStudy tiny\n" in shown.stdout and "Best trial: " in shown.stdout
    doc = json.loads((runs / "studies.json").read_text(encoding="utf-8"))
    (study,) = doc["studies"]
    assert study["counts"]["complete"] == 3 and study["tuning_runs"] == 3
    assert study["tuning_core_seconds"] > 0
    assert png_size(runs / "slice_tiny.png")[0] > 0
    (transfer,) = doc["transfers"]
    assert transfer["study_found"] and transfer["proxy_width"] == TINY_BASE["model"]["hidden_size"]
    assert [w["width"] for w in transfer["widths"]] == [24, 32]


def test_searched_runs_stay_out_of_the_learning_rate_sections(tuned):
    """Trials and transferred runs are not a learning-rate grid: the best-lr table, the
    lr-transfer metrics and transfer.png leave them out (the plot says there is no sweep)."""
    root, out = tuned
    assert out["transfer"]["panels"] == [] and out["panels"] == []
    assert "| mup" not in out["table"]  # no best-lr row, though every run is muP
    assert out["transfer_png"].stat().st_size > 1000
    assert {r["group"] for r in report.load_results(root)[0]} >= {"s", "s.transfer"}
