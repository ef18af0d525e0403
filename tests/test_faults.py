"""The runner under faults: moved folders, signals, deleted, corrupt and planted files in
run folders, two sweeps on one folder. Nothing completed is lost or retrained, nothing
planted is executed, a fault in one run's folder stays in that run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout

from lstm_lightning import execute
from lstm_lightning import runs as folders
from lstm_lightning.cli import main
from lstm_lightning.config_hash import legacy_hash
from tests.conftest import ROOT, group, run_cli, start_cli


def stamp(project, label: str, runs: Path | None = None) -> int:
    return ((runs or project.runs) / "g" / label / "result.json").stat().st_mtime_ns


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# --- 11.1: the hash covers the config, not where the folder is ----------------------------


@pytest.mark.slow
def test_a_relative_then_absolute_or_moved_runs_dir_skips_completed_runs(
    project, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    relative = project.args()
    relative[relative.index("--runs_dir") + 1] = "runs"  # what a user types
    assert main(relative) == 0
    before = stamp(project, "a"), stamp(project, "b")
    assert main(project.args()) == 0  # the absolute path, as cli.py slurm writes it
    assert (stamp(project, "a"), stamp(project, "b")) == before
    moved = tmp_path / "elsewhere" / "runs"
    shutil.copytree(project.runs, moved)
    capsys.readouterr()
    assert main(project.args(runs=moved)) == 0
    assert "0 to run" in capsys.readouterr().err
    # A genuinely changed config is still refused, and says what changed.
    project.defs(group("g", ("a", {"learning_rate": 0.03}), ("b", {"hidden_size": 24})))
    assert main(project.args(runs=moved)) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "g/a" in err[0] and "model.learning_rate 0.02 -> 0.03" in err[0]


def test_results_hashed_the_old_way_are_accepted_even_after_a_move(project, tmp_path, capsys):
    assert main(project.args()) == 0
    for label in "ab":  # as the previous version wrote them: sha256 of config.yaml's text
        run = project.runs / "g" / label
        result = project.result("g", label)
        result["config_hash"] = legacy_hash((run / "config.yaml").read_text())
        (run / "result.json").write_text(json.dumps(result))
    moved = tmp_path / "moved"
    shutil.move(project.runs, moved)
    before = stamp(project, "a", moved)
    capsys.readouterr()
    assert main(project.args(runs=moved)) == 0
    assert "2 runs, 2 already done, 0 to run" in capsys.readouterr().err
    assert stamp(project, "a", moved) == before


@pytest.mark.slow
def test_force_reruns_only_the_runs_whose_config_changed(project, capsys):
    assert main(project.args()) == 0
    kept = stamp(project, "b")
    project.defs(group("g", ("a", {"learning_rate": 0.03}), ("b", {"hidden_size": 24})))
    assert main(project.args("--force")) == 0
    assert project.result("g", "a")["hparams"]["learning_rate"] == 0.03
    assert stamp(project, "b") == kept  # unchanged: never deleted, never retrained


# --- 11.3: deleted files ----------------------------------------------------------------------


def test_a_deleted_config_yaml_of_a_completed_run_is_written_again(project):
    assert main(project.args()) == 0
    config = project.runs / "g" / "a" / "config.yaml"
    text, before = config.read_text(), stamp(project, "a")
    config.unlink()
    assert main(project.args()) == 0
    assert config.read_text() == text and stamp(project, "a") == before


@pytest.mark.slow
@pytest.mark.parametrize("result", ["kept", "deleted"])
def test_a_damaged_config_yaml_is_written_again_and_the_sweep_goes_on(project, capsys, result):
    # A damaged config.yaml crashed planning (and --dry_run) with a YAML traceback when the
    # run had a checkpoint and no result; with a result it stayed damaged, unnoticed.
    assert main(project.args()) == 0
    config = project.runs / "g" / "a" / "config.yaml"
    text, before = config.read_text(), stamp(project, "a")
    config.write_text("model: [unclosed\n")
    if result == "deleted":
        (project.runs / "g" / "a" / "result.json").unlink()
    capsys.readouterr()
    assert main(project.args("--dry_run")) == 0
    assert main(project.args()) == 0
    assert "Traceback" not in "".join(capsys.readouterr())
    assert config.read_text() == text
    assert project.result("g", "a")["status"] == "completed"
    assert (stamp(project, "a") == before) == (result == "kept")


def test_a_deleted_result_with_a_final_checkpoint_reruns_from_the_start(project):
    assert main(project.args("--labels", "a")) == 0
    first = project.result("g", "a")
    (project.runs / "g" / "a" / "result.json").unlink()
    assert main(project.args("--labels", "a")) == 0
    again = project.result("g", "a")
    assert again["resumed_from_step"] is None and again["steps"] == 8
    assert again["metrics"]["train/loss"] is not None and again["tokens_per_second"] > 0
    assert again["metrics"] == first["metrics"]  # the same run, trained again


# --- 11.6, 11.7: planted, corrupt and unwritable files stay in their run -----------------------


class Payload:
    """Unpickling this creates ``marker``: a planted checkpoint that would execute."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["last.ckpt", "hpc_ckpt_1.ckpt"])
def test_a_planted_pickle_never_runs_and_fails_only_its_run(project, tmp_path, capsys, name):
    marker = tmp_path / "executed"
    (project.runs / "g" / "a").mkdir(parents=True)
    torch.save({"global_step": Payload(marker)}, project.runs / "g" / "a" / name)
    assert main(project.args("--dry_run")) == 0
    assert not marker.exists()
    assert main(project.args()) == 1
    assert not marker.exists()
    failed = project.result("g", "a")
    assert (
        failed["status"] == "failed"
        and f"g/a/{name} is not a readable checkpoint" in (failed["error"])
    )
    assert project.result("g", "b")["status"] == "completed"
    assert f"failed    g/a: {project.runs}/g/a/{name}" in capsys.readouterr().err


def test_a_garbage_result_json_is_named_and_the_sweep_goes_on(project, capsys):
    (project.runs / "g" / "a").mkdir(parents=True)
    garbage = project.runs / "g" / "a" / "result.json"
    garbage.write_text("{not json")
    assert main(project.args("--dry_run")) == 0
    assert f"hold    g/a  learning_rate=0.02  [{garbage} is unreadable" in capsys.readouterr().out
    assert main(project.args()) == 1
    err = capsys.readouterr().err
    assert f"g/a: left as it is: {garbage} is unreadable (not valid JSON" in err
    assert "2 runs, 0 already done, 1 left as they are, 1 to run" in err  # held is not done
    assert garbage.read_text() == "{not json"  # kept: it is the user's to look at
    assert project.result("g", "b")["status"] == "completed"
    assert main(project.args("--force")) == 0  # --force reruns it
    assert project.result("g", "a")["status"] == "completed"


def test_a_run_folder_that_cannot_be_written_fails_only_its_run(project, capsys):
    (project.runs / "g").mkdir(parents=True)
    (project.runs / "g" / "a").write_text("a file where the run's folder should be")
    assert main(project.args()) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"failed +g/a: cannot write into .*g/a", err), err
    assert project.result("g", "b")["status"] == "completed"


def test_a_truncated_checkpoint_fails_only_its_run(project, capsys):
    assert main(project.args()) == 0
    run = project.runs / "g" / "a"
    checkpoint = (run / "last.ckpt").read_bytes()
    (run / "last.ckpt").write_bytes(checkpoint[: len(checkpoint) // 2])
    (run / "result.json").unlink()
    assert main(project.args()) == 1
    failed = project.result("g", "a")
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"{run}/last.ckpt is not a readable checkpoint")
    assert "delete it to rerun" in failed["error"]


def test_a_run_folders_checkpoint_is_read_by_the_one_safe_loader_which_says_why(tmp_path):
    # runs.checkpoint_step reads through checkpoints.load: its refusal's cause, in run words.
    marker, path = tmp_path / "executed", tmp_path / "last.ckpt"
    torch.save({"global_step": Payload(marker)}, path)
    with pytest.raises(folders.CheckpointError) as refused:
        folders.checkpoint_step(path)
    assert not marker.exists()
    said = str(refused.value)
    assert said.startswith(f"{path} is not a readable checkpoint (it holds a Python object")
    assert "nothing in it ran" in said and said.endswith(
        "delete it to rerun the run from the start"
    )
    torch.save({"epoch": 0}, path)
    with pytest.raises(folders.CheckpointError, match="holds no global step; delete it"):
        folders.checkpoint_step(path)


# --- 11.8, 11.11: bad input is one line before anything runs -----------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("config_not_yaml", "--config: .* is not valid YAML"),
        ("config_a_list", "--config: .* must hold a mapping of keys"),
        ("runs_dir_a_file", "--runs_dir: .* is a file; give a folder"),
        ("missing_data_file", "g/b: data.path: /nonexistent.txt does not exist"),
        ("steps_per_batch", "g/b: data.steps_per_batch=3 must divide trainer.max_steps=8"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_run(project, capsys, case, message):
    args = project.args()
    if case == "config_not_yaml":
        project.config.write_text("trainer: [unclosed\n")
    elif case == "config_a_list":
        project.config.write_text("- a\n- b\n")
    elif case == "runs_dir_a_file":
        project.runs.write_text("")
    else:
        bad = {"missing_data_file": {"data.source": "text", "data.path": "/nonexistent.txt"}}
        bad["steps_per_batch"] = {"data.steps_per_batch": 3}
        project.defs(group("g", ("a", {}), ("b", bad[case])))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (project.runs / "g").exists()


# --- 11.12, 11.14, 11.15: what a sweep writes and says --------------------------------------------


def test_a_diverged_result_is_strict_json_and_the_end_points_at_the_report(project, capsys):
    project.defs(group("g", ("nan", {"init_std": 1e38})))
    assert main(project.args()) == 0
    text = (project.runs / "g" / "nan" / "result.json").read_text()

    def refuse(constant):
        raise ValueError(f"{constant} in result.json")

    assert json.loads(text, parse_constant=refuse)["status"] == "diverged"
    err = capsys.readouterr().err
    assert f"python cli.py report --runs_dir {project.runs}" in err


@pytest.mark.slow
def test_no_srun_hint_outside_a_slurm_job(project, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        [sys.executable, "cli.py", *project.args("--labels", "a", "--workers", "1")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "`srun`" not in done.stderr and "srun command" not in done.stderr


def test_cli_slurm_refuses_runs_the_sweep_would_refuse_before_queueing(project, capsys):
    assert main(project.args("--labels", "a")) == 0
    project.defs(group("g", ("a", {"learning_rate": 0.03}), ("b", {"hidden_size": 24})))
    capsys.readouterr()
    flags = ["--config", str(project.config), "--definitions", str(project.definitions)]
    assert main(["slurm", *flags, "--runs_dir", str(project.runs), "--total_jobs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "g/a: its config changed since it ran" in err[0], err
    assert not (project.runs / "slurm").exists()


# --- 11.4: the per-run lock ------------------------------------------------------------------------

HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])  # kept: a lock object released when collected
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(run_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the run's lock for ``seconds`` (once it printed "held")."""
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir / folders.LOCK), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_left_by_a_killed_process_is_free(tmp_path):
    holder = hold_lock(tmp_path / "run", 60)
    with pytest.raises(Timeout):
        FileLock(tmp_path / "run" / folders.LOCK).acquire(timeout=0)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = FileLock(tmp_path / "run" / folders.LOCK)
    lock.acquire(timeout=0)  # the OS released the dead holder's lock
    lock.release()


@pytest.mark.slow
def test_a_run_another_sweep_holds_waits_until_the_others_are_done(project, capsys):
    holder = hold_lock(project.runs / "g" / "a", 3)
    try:
        assert main(project.args("--workers", "1")) == 0
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert "g/a: another sweep holds it; back to it at the end" in err
    order = re.findall(r"\[sweep\] run \d/2 (g/\w)", err)
    assert order == ["g/a", "g/b", "g/a"], err  # a tried, b trained, then a waited for
    assert "run 2/2 g/a (run, waits for the sweep that holds it" in err
    assert project.result("g", "a")["status"] == "completed"


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(project):
    project.base(max_steps=60, val_check_interval=60)
    project.defs(group("g", *[(f"r{i}", {"seed": i}) for i in range(4)]))
    sweeps = [start_cli(*project.args("--workers", "1")) for _ in range(2)]
    errs = [proc.communicate(timeout=600)[1] for proc in sweeps]
    assert [proc.returncode for proc in sweeps] == [0, 0], errs
    for i in range(4):
        run = project.runs / "g" / f"r{i}"
        assert project.result("g", f"r{i}")["status"] == "completed"
        assert len(list(run.glob("events.out.tfevents.*"))) == 1, i  # trained once
        assert sorted(p.name for p in run.glob("*.ckpt")) == ["last.ckpt"]
    ran = [int(re.search(r"\[sweep\] ran (\d):", err).group(1)) for err in errs]
    assert sum(ran) == 4, errs  # each run trained by one of them


# --- 11.2: signals ---------------------------------------------------------------------------------


def started_training(project, label: str, proc, timeout: float = 240) -> None:
    run = project.runs / "g" / label
    deadline = time.time() + timeout
    while not (run / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.parametrize("how, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_workers_1_stops_on_a_signal_with_one_line_and_resumes(project, how, status):
    project.base(max_steps=400, val_check_interval=400)
    project.defs(group("g", ("a", {})))
    proc = start_cli(*project.args("--workers", "1"), start_new_session=True)
    started_training(project, "a", proc)
    if how == signal.SIGINT:
        os.killpg(proc.pid, how)  # Ctrl-C reaches the whole process group
    else:
        proc.send_signal(how)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == status, err[-3000:]
    name = signal.Signals(how).name
    said = [line for line in err.splitlines() if line.startswith("[sweep] stopped")]
    assert said == [
        f"[sweep] stopped by {name} during g/a: it resumes from its last.ckpt next time"
    ]
    assert "Traceback" not in err
    assert not (project.runs / "g" / "a" / "result.json").exists()
    again = run_cli(*project.args("--workers", "1"))
    assert again.returncode == 0, again.stderr[-3000:]
    result = project.result("g", "a")
    assert result["status"] == "completed" and result["steps"] == 400
    assert result["resumed_from_step"] and result["resumed_from_step"] > 0
    # the stopped attempt's compute up to its last.ckpt counts too (lstm_lightning.clock)
    assert result["core_seconds"] > result["wall_seconds"] * result["threads"]


def test_sigterm_between_runs_stops_at_once_with_exit_143(project, capsys):
    run = folders.Run("g", "a", {})
    with pytest.raises(SystemExit) as stopped, execute.Stopping() as stop:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # no fit running: the handler raises
            time.sleep(5)
        except KeyboardInterrupt:
            stop.end(run)
    assert stopped.value.code == 143
    assert capsys.readouterr().err.startswith("[sweep] stopped by SIGTERM during g/a")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
