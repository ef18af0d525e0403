"""The sweep runner: aliases, validation, shards, resume after SIGKILL, failure isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_lightning import runs as folders
from lstm_lightning import sweep
from lstm_lightning.cli import main
from tests.conftest import ROOT, group, run_cli, scalar_events

# --- aliases and validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, path",
    [
        ("learning_rate", "model.learning_rate"),
        ("hidden_size", "model.hidden_size"),
        ("optimizer", "model.optimizer"),
        ("parametrization", "model.parametrization"),
        ("num_layers", "model.num_layers"),
        ("batch_size", "data.batch_size"),
        ("seq_len", "data.seq_len"),
        ("max_steps", "trainer.max_steps"),
        ("seed", "seed_everything"),
        ("vocab_size", "data.vocab_size"),
    ],
)
def test_flat_keys_are_aliases_for_config_paths(alias, path):
    assert folders.ALIASES[alias] == path


def test_dry_run_resolves_aliases_and_dotted_paths_and_writes_nothing(project, capsys):
    project.defs(
        group(
            "g",
            (
                "a",
                {"learning_rate": 0.5, "model.init_std": 0.5, "trainer.max_steps": 6, "seq_len": 4},
            ),
        )
    )
    assert main(project.args("--dry_run")) == 0
    out = capsys.readouterr().out
    assert "g/a" in out and "learning_rate=0.5" in out
    assert not project.runs.exists()
    runs, _, _ = sweep.prepare(project.selection())
    config = runs[0].config
    assert (config["model.learning_rate"], config["model.init_std"]) == (0.5, 0.5)
    assert (config["trainer.max_steps"], config["data.seq_len"]) == (6, 4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"learning_rat": 0.1},
            "g/bad: unknown override key 'learning_rat' .*did you mean learning_rate",
        ),
        ({"model.hiden_size": 8}, "g/bad: .*hiden_size"),
        ({"hidden_size": "wide"}, "g/bad: .*hidden_size.*wide"),
        ({"learning_rate": -1.0}, "g/bad: model.learning_rate must be >= 0"),
        ({"batch_size": 0}, "g/bad: data.batch_size must be a positive integer"),
        ({"optimizer": "lion"}, "g/bad: .*optimizer.*lion"),
    ],
)
def test_every_run_is_validated_before_any_starts(project, capsys, overrides, message):
    import re

    # The bad run comes last: nothing may have run or been written before the error.
    project.defs(group("g", ("good", {}), ("bad", overrides)))
    assert main(project.args()) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not project.runs.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiments", "gg"], "no group named 'gg' \\(did you mean g"),
        (["--labels", "c"], "no sub-experiment labelled 'c'"),
        (["--job_id", "2", "--total_jobs", "2"], "--job_id must be in \\[0, 1\\]"),
    ],
)
def test_selection_errors(project, capsys, args, message):
    import re

    assert main(project.args(*args)) == 2
    assert re.search(message, capsys.readouterr().err)


def test_duplicate_labels_across_groups_are_refused(project, capsys):
    project.defs(group("g", ("a", {})), group("h", ("a", {})))
    assert main(project.args()) == 2
    assert "duplicate labels: 'a'" in capsys.readouterr().err


# --- shards ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.floats(0.1, 1e6), max_size=60), total=st.integers(1, 20))
def test_every_run_lands_in_exactly_one_balanced_shard(costs, total):
    shards = sweep.assign_shards(costs, total)
    assert len(shards) == len(costs) and all(0 <= s < total for s in shards)
    assert shards == sweep.assign_shards(costs, total)  # deterministic
    loads = [sum(c for c, s in zip(costs, shards) if s == j) for j in range(total)]
    if costs:  # greedy longest-first: no shard exceeds another by more than one run
        assert max(loads) - min(loads) <= max(costs) * (1 + 1e-9)


def test_shards_balance_cost_not_count():
    # One wide run costs as much as four narrow ones: 2 shards get 1 and 4 runs.
    assert sorted(sweep.assign_shards([4.0, 1, 1, 1, 1], 2)) == [0, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "0",
            },
            (3, 4),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "12",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "10",
            },
            (2, 4),
        ),
    ],
)
def test_shard_from_slurm_array(env, expected):
    assert sweep.shard_from_env(env) == expected


def test_flags_win_over_slurm_and_more_shards_than_runs_is_fine(project):
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert sweep.choose_shard(None, None, env) == (1, 2)
    assert sweep.choose_shard(0, 5, env) == (0, 5)
    assert sweep.choose_shard(None, 2, env) == (1, 2)  # --total_jobs alone: task from SLURM
    runs, job, total = sweep.prepare(project.selection(), sweep.Placement(job_id=4, total_jobs=5))
    assert [r for r in runs if r.shard == 4] == []  # an empty shard, no error


# --- running ---------------------------------------------------------------------------


def test_sweep_writes_one_folder_per_run_and_fit_reproduces_it(project):
    assert main(project.args()) == 0
    run = project.runs / "g" / "a"
    for name in ("config.yaml", "last.ckpt", "result.json"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    result = project.result("g", "a")
    assert result["status"] == "completed" and result["steps"] == 8
    assert result["hparams"]["learning_rate"] == 0.02
    assert result["metrics"]["val/loss_floor"] is not None
    # The written config alone reproduces the run: same final validation loss on CPU.
    replay = project.runs.parent / "replay"
    assert (
        main(
            [
                "fit",
                "--config",
                str(run / "config.yaml"),
                "--trainer.logger.init_args.save_dir",
                str(replay),
                "--checkpoint.dirpath",
                str(replay),
            ]
        )
        == 0
    )
    assert scalar_events(replay / "a")["val/loss"][-1][1] == pytest.approx(
        result["metrics"]["val/loss"], rel=1e-6
    )


@pytest.mark.slow
def test_a_second_sweep_skips_completed_runs_and_refuses_changed_ones(project, capsys):
    assert main(project.args()) == 0
    stamp = (project.runs / "g" / "a" / "result.json").stat().st_mtime_ns
    assert main(project.args()) == 0
    assert (project.runs / "g" / "a" / "result.json").stat().st_mtime_ns == stamp
    project.defs(group("g", ("a", {"learning_rate": 0.03}), ("b", {"hidden_size": 24})))
    capsys.readouterr()
    assert main(project.args()) == 2
    assert "changed config (g/a)" in capsys.readouterr().err
    assert main(project.args("--force")) == 0
    assert project.result("g", "a")["hparams"]["learning_rate"] == 0.03


@pytest.mark.slow
def test_failed_and_diverged_runs_are_recorded_and_the_sweep_goes_on(project, capsys, tmp_path):
    # A file that is not UTF-8 passes the pre-check (it is there) and fails when it loads.
    (tmp_path / "latin.txt").write_bytes(b"\xff\xfe\xfa" * 100)
    project.defs(
        group(
            "g",
            ("boom", {"data.source": "text", "data.path": str(tmp_path / "latin.txt")}),
            ("nan", {"init_std": 1e38}),
            ("fine", {}),
        )
    )
    assert main(project.args()) == 1  # a failed run makes the sweep exit non-zero
    boom, nan, fine = (project.result("g", x) for x in ("boom", "nan", "fine"))
    assert boom["status"] == "failed" and "is not UTF-8 text" in boom["error"]
    assert "Traceback" in (project.runs / "g" / "boom" / "traceback.txt").read_text()
    assert nan["status"] == "diverged" and nan["diverged_at_step"] == 0
    assert fine["status"] == "completed"
    err = capsys.readouterr().err
    assert "1 completed, 1 diverged, 1 failed" in err
    # The report reads the real results: a row per run, statuses as recorded.
    assert main(["report", "--runs_dir", str(project.runs)]) == 0
    rows = (project.runs / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and sum(",failed," in r or ",diverged," in r for r in rows) == 2
    assert (project.runs / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # A restart leaves them alone; --retry_failed runs them again.
    assert main(project.args()) == 0
    assert main(project.args("--retry_failed", "--labels", "nan")) == 0
    assert project.result("g", "nan")["status"] == "diverged"


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_nothing(project):
    # Three runs of 200 steps, checkpointing every 4: kill the sweep while the second
    # trains, restart it, and check the first is not rerun and the second resumes.
    project.base(max_steps=200, val_check_interval=200)
    project.defs(group("g", ("r1", {}), ("r2", {"learning_rate": 0.02}), ("r3", {})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "cli.py", *project.args()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    r2 = project.runs / "g" / "r2"
    deadline = time.time() + 240
    while not (r2 / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (project.runs / "g" / "r1" / "result.json").exists()
    assert not (r2 / "result.json").exists()  # killed in flight
    first = (project.runs / "g" / "r1" / "result.json").stat().st_mtime_ns
    assert run_cli(*project.args()).returncode == 0
    assert (project.runs / "g" / "r1" / "result.json").stat().st_mtime_ns == first
    resumed = project.result("g", "r2")
    assert resumed["status"] == "completed" and resumed["steps"] == 200
    assert resumed["resumed_from_step"] and resumed["resumed_from_step"] > 0
    assert project.result("g", "r3")["status"] == "completed"
    assert not list(project.runs.rglob("*.tmp"))  # no half-written file anywhere


@pytest.mark.slow
def test_the_default_sweep_and_its_report(tmp_path):
    # What a new user runs first: python cli.py sweep, then python cli.py report.
    runs = tmp_path / "runs"
    done = run_cli("sweep", "--runs_dir", str(runs))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[sweep] ran 40: 40 completed, 0 diverged, 0 failed" in done.stderr
    report = run_cli("report", "--runs_dir", str(runs))
    assert report.returncode == 0, report.stderr[-2000:]
    assert "40 runs: 40 completed" in report.stdout
    for width in (16, 24, 32, 48, 64):
        assert f"| mup             | sgd       | {width} " in report.stdout
    assert (runs / "transfer.png").stat().st_size > 10_000
