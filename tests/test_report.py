"""The sweep report's files: exact CSV rows, report.md, transfer.json, bad files,
atomicity, and the command."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from lstm_lightning import cli, report
from lstm_lightning.errors import ConfigError
from lstm_lightning.report import (
    CSV_COLUMNS,
    format_table,
    load_results,
    transfer_json,
    write_report,
)
from lstm_lightning.results import FIELDS, HPARAMS, METRICS, OBJ
from lstm_lightning.transfer import transfer_metrics


def md_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, padding stripped."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


# --- results.csv --------------------------------------------------------------------


def test_csv_has_one_row_per_run_in_path_order(report_sweep):
    root, out = report_sweep
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
    runs = {"group": "MUP_SGD", "parametrization": "mup", "optimizer": "sgd", "hidden_size": "16",
            "num_layers": "1", "batch_size": "32", "seq_len": "64", "max_steps": "300",
            "base_hidden_size": "32", "val_loss_floor": "1.6", "config_hash": "3f2a",
            "tokens_per_second": "350000.0", "wall_seconds": "5.5", "resumed_from_step": "",
            "world_size": "1", "threads": "", "core_seconds": "", "error": "",
            "worker_death": "", "study": "", "trial": ""}  # fmt: skip
    assert dict(zip(rows[0], rows[1])) == runs | {
        "label": "a_w16_lr-3_s0", "status": "completed", "learning_rate": "0.125", "seed": "0",
        "train_loss": "1.95", "val_loss": "1.7", "val_loss_best": "1.575", "steps": "300",
        "diverged_at_step": "",
    }  # fmt: skip
    assert dict(zip(rows[0], rows[3])) == runs | {
        "label": "c_w16_lr-2_s0", "status": "diverged", "learning_rate": "0.25", "seed": "0",
        "train_loss": "", "val_loss": "", "val_loss_best": "", "steps": "12",
        "diverged_at_step": "12",
    }  # fmt: skip
    assert all(len(row) == len(CSV_COLUMNS) for row in rows)


def test_csv_columns_are_the_result_schemas_values():
    # Every value a result.json holds has a column: hparams, metrics and the scalar fields.
    scalars = [key for key, (types, _) in FIELDS.items() if OBJ not in types]
    metrics = [name.replace("/", "_") for name in METRICS]
    assert CSV_COLUMNS[:3] == ("group", "label", "status")
    assert sorted(CSV_COLUMNS) == sorted({*HPARAMS, *metrics, *scalars} - {"schema"})


# --- report.md ----------------------------------------------------------------------


def test_format_table_prints_counts_and_best_lr_rows(report_sweep):
    results, _ = load_results(report_sweep[0])
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
    assert report_sweep[1]["table"] == format_table(results)


def test_report_md_has_group_tables_problems_and_best_lr_tables(report_sweep):
    text = report_sweep[1]["report_md"].read_text(encoding="utf-8")
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


def test_a_worker_death_is_listed_as_one(tmp_path, fake_runs):
    death = "worker died with signal 9 (SIGKILL, e.g. the out-of-memory killer)"
    hint = f"{death}; --retry_failed resumes it"  # the runner's error for it
    failed = {"status": "failed", "val_loss": None}
    v2 = {**failed, "schema": 2, "resumed_from_step": None, "threads": 1, "core_seconds": 1.0}
    v2 |= {"study": None, "trial": None}
    fake_runs.write_result(tmp_path, "G", "ok")
    fake_runs.write_result(tmp_path, "G", "bare", **v2, worker_death=death)
    fake_runs.write_result(tmp_path, "G", "runner", **v2, worker_death=death, error=hint)
    fake_runs.write_result(tmp_path, "G", "schema1", **failed, error=hint)
    fake_runs.write_result(tmp_path, "G", "oom", **v2, worker_death=None, error="OSError: oom")
    out = write_report(tmp_path)
    text = out["report_md"].read_text(encoding="utf-8")
    assert out["warnings"] == []
    assert f"- failed (worker death): `bare`: {death}\n" in text
    assert f"- failed (worker death): `runner`: {hint}\n" in text
    assert f"- failed (worker death): `schema1`: {hint}\n" in text
    assert "- failed: `oom`: OSError: oom\n" in text
    assert "4 failed" in out["table"]


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


# --- transfer.json ------------------------------------------------------------------


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


def test_transfer_json_writes_a_diverged_loss_as_null(tmp_path, fake_runs):
    loss = fake_runs.quadratic({16: -3.3, 64: -3.3})
    diverged_at = lambda w, s, x: math.inf if (w, x) == (64, -3) else loss(w, s, x)  # noqa: E731
    fake_runs.write_curves(tmp_path, diverged_at, widths=(16, 64))
    doc = json.loads(transfer_json(transfer_metrics(load_results(tmp_path)[0]), tmp_path))
    w16, w64 = doc["panels"][0]["widths"]
    assert (w64["loss_at_transferred_lr"], w64["diverged_at_transferred_lr"]) == (None, True)
    assert w16["diverged_at_transferred_lr"] is False
    assert doc["panels"][0]["wider_is_better"] is False


# --- bad input ----------------------------------------------------------------------


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
def test_malformed_result_is_skipped_with_a_warning_naming_it(
    tmp_path, content, problem, fake_runs
):
    fake_runs.write_result(tmp_path, "G", "good")
    bad = fake_runs.write_result(tmp_path, "G", "bad")
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


def test_report_lists_skipped_files(tmp_path, fake_runs):
    fake_runs.write_result(tmp_path, "G", "good")
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


# --- writing ------------------------------------------------------------------------


def test_outputs_go_to_out_dir_with_no_temp_files(report_sweep, tmp_path, fake_runs):
    root = report_sweep[0]
    outputs = ["report.md", "results.csv", "transfer.json", "transfer.png"]
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == outputs
    runs = tmp_path / "runs"
    fake_runs.write_result(runs, "G", "x")
    write_report(runs, out_dir=tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == outputs
    assert sorted(os.listdir(runs)) == ["G"]


def test_a_failed_replace_leaves_the_previous_report_intact(tmp_path, monkeypatch, fake_runs):
    fake_runs.write_result(tmp_path, "G", "x")
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


def test_a_failed_plot_leaves_the_previous_png_and_no_temp_file(tmp_path, monkeypatch, fake_runs):
    fake_runs.write_result(tmp_path, "G", "x")
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


# --- the command --------------------------------------------------------------------


def test_main_prints_the_table_and_warnings(tmp_path, capsys, fake_runs):
    fake_runs.write_sweep(tmp_path)
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


def test_main_prints_the_transfer_table_and_verdicts(transfer_sweep, tmp_path, capsys):
    assert report.main(runs_dir=str(transfer_sweep[0]), out_dir=str(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "\nLearning-rate transfer\n" in printed
    assert "- Adam: muP transfers: " in printed
    assert printed.rstrip().endswith(f"{tmp_path / 'transfer.json'}")


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
def test_cli_report_on_a_file_is_one_line(tmp_path, capsys, flag, problem, fake_runs):
    runs = tmp_path / "runs"
    fake_runs.write_result(runs, "G", "x")
    file = tmp_path / "file.txt"
    file.write_text("not a folder", encoding="utf-8")
    args = {"--runs_dir": str(runs), flag: str(file)}
    argv = ["report", *(item for pair in args.items() for item in pair)]
    assert cli.main(argv) == cli.EXIT_CONFIG_ERROR
    assert capsys.readouterr().err == f"error: {problem.format(file=file)}\n"
    assert file.read_text(encoding="utf-8") == "not a folder"


def test_an_out_dir_below_a_file_is_a_clear_error(tmp_path, fake_runs):
    fake_runs.write_result(tmp_path / "runs", "G", "x")
    (tmp_path / "file").write_text("", encoding="utf-8")
    out = tmp_path / "file" / "report"
    with pytest.raises(ConfigError, match=f"^cannot make out_dir {out}: Not a directory$"):
        write_report(tmp_path / "runs", out)
