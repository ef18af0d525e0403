"""Local sweep parallelism: a parallel sweep's results equal a sequential one's, a dead
worker loses only its own run, and the threads in use stay within the cores."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_lightning import execute, results, sweep
from lstm_lightning import runs as folders
from lstm_lightning import workers as pool
from lstm_lightning.cli import main
from lstm_lightning.errors import ConfigError
from tests.conftest import ROOT, group, run_cli

FOUR = group(
    "g",
    ("a", {"learning_rate": 0.02}),
    ("b", {"hidden_size": 24}),
    ("c", {"optimizer": "sgd", "learning_rate": 0.5}),
    ("d", {"seed": 1, "num_layers": 2}),
)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in os.listdir("/proc"):
        try:
            with open(f"/proc/{stat}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat.isdigit() and int(fields[1]) == pid:
            found.append(int(stat))
    return found


# --- the same results ------------------------------------------------------------------


@pytest.mark.slow  # starting the workers (importing torch and Lightning) takes ~5 s each
def test_parallel_sweep_gives_the_sequential_results_bit_for_bit(project, tmp_path, capsys):
    project.defs(FOUR)
    assert main(project.args("--workers", "1")) == 0  # in this process
    assert "worker process" not in capsys.readouterr().err
    parallel = tmp_path / "parallel"
    assert main(project.args("--workers", "2", runs=parallel)) == 0
    err = capsys.readouterr().err
    assert (
        re.search(r"worker process(es)? on \d+ cores", err) and "[sweep] ran 4: 4 completed" in err
    ), err
    assert len(re.findall(r"\[sweep\] run \d/4 g/\w \(run, pid \d+, 1 thread", err)) == 4
    for label in "abcd":
        one = project.result("g", label)
        two = project.result("g", label, runs=parallel)
        assert two["status"] == "completed"
        for key in ("metrics", "steps", "hparams", "diverged_at_step", "overrides"):
            assert two[key] == one[key], (label, key)  # exact: no tolerance
        config = (parallel / "g" / label / "config.yaml").read_text()
        assert config == (project.runs / "g" / label / "config.yaml").read_text().replace(
            str(project.runs), str(parallel)
        )


def test_workers_1_runs_in_this_process(project, monkeypatch):
    monkeypatch.setattr(pool, "Pool", None)  # any use of a worker process would fail
    assert main(project.args("--workers", "1")) == 0
    assert project.result("g", "a")["status"] == "completed"


# --- a worker that dies ----------------------------------------------------------------


def test_a_pool_replaces_a_dead_worker_and_goes_on():
    # subprocess.call(job, 1) as the work, so that the workers start in a blink: `sleep 30`
    # is SIGKILLed from here (as by the out-of-memory killer), a missing program raises in
    # the worker (a worker that crashes), and the other jobs finish.
    jobs = [["true"], ["sleep", "30"], ["/nonexistent"], ["true"]]
    events = []
    with pool.Pool(subprocess.call, 2) as workers:
        for event in workers.run(jobs, [1, 1, 1, 1], cores=2):
            events.append(event)
            if event.kind == "start" and event.index == 1:
                deadline = time.time() + 60
                while not children(event.detail) and time.time() < deadline:
                    time.sleep(0.02)  # until it runs the sleep
                os.kill(event.detail, signal.SIGKILL)
    assert sorted(e.index for e in events if e.kind == "start") == [0, 1, 2, 3]
    ends = {e.index: (e.kind, e.detail) for e in events if e.kind != "start"}
    assert ends == {
        0: ("done", 0),
        1: ("died", "worker died with signal 9 (SIGKILL, e.g. the out-of-memory killer)"),
        2: ("died", "worker died with exit status 1"),
        3: ("done", 0),
    }


@pytest.mark.slow
def test_killing_a_worker_fails_only_its_run_and_a_retry_resumes_it(project):
    project.defs(
        group(
            "g",
            ("quick1", {}),
            ("slow", {"max_steps": 400, "val_check_interval": 400}),
            ("quick2", {"learning_rate": 0.02}),
            ("quick3", {"hidden_size": 24}),
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "cli.py", *project.args("--workers", "2")],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:  # the slow run is the longest: it starts first
        if match := re.search(r"g/slow \(run, pid (\d+)", line):
            break
    slow = project.runs / "g" / "slow"
    deadline = time.time() + 120
    while not (slow / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int(match.group(1)), signal.SIGKILL)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 1, err[-3000:]
    assert "g/slow: worker died with signal 9" in err
    assert "[sweep] ran 4: 3 completed, 0 diverged, 1 failed" in err
    failed = project.result("g", "slow")
    assert failed["status"] == "failed" and "signal 9" in failed["error"]
    assert (slow / "last.ckpt").exists()  # kept for the retry
    quick = {x: project.result("g", x)["status"] for x in ("quick1", "quick2", "quick3")}
    assert quick == dict.fromkeys(quick, "completed")
    stamp = (project.runs / "g" / "quick1" / "result.json").stat().st_mtime_ns
    # A plain restart leaves it failed; --retry_failed resumes it from its checkpoint.
    assert run_cli(*project.args()).returncode == 0
    assert project.result("g", "slow")["status"] == "failed"
    again = run_cli(*project.args("--retry_failed"))
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = project.result("g", "slow")
    assert resumed["status"] == "completed" and resumed["steps"] == 400
    assert resumed["resumed_from_step"] and resumed["resumed_from_step"] > 0
    assert (project.runs / "g" / "quick1" / "result.json").stat().st_mtime_ns == stamp
    assert not list(project.runs.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_sweep_stops_its_workers(project, how):
    # SIGINT goes to the whole process group, as Ctrl-C does; SIGKILL only to the sweep.
    steps = {"max_steps": 400, "val_check_interval": 400}
    project.defs(group("g", ("r1", steps), ("r2", steps), ("r3", steps)))
    proc = subprocess.Popen(
        [sys.executable, "cli.py", *project.args("--workers", "2")],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pids = []
    for line in proc.stderr:
        if match := re.search(r"pid (\d+)", line):
            pids.append(int(match.group(1)))
            if len(pids) == 2:
                break
    deadline = time.time() + 120
    while not list(project.runs.glob("g/*/last.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    if how == signal.SIGINT:
        os.killpg(proc.pid, how)
    else:
        proc.send_signal(how)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == (-9 if how == signal.SIGKILL else 130), err[-3000:]
    deadline = time.time() + 10  # the kernel delivers SIGKILL to the workers (PDEATHSIG)
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]
    assert not list(project.runs.glob("g/*/result.json"))  # nothing recorded as failed
    if how != signal.SIGINT:
        return  # the restart is the same after each
    again = run_cli(*project.args())
    assert again.returncode == 0, again.stderr[-3000:]
    results = [project.result("g", r) for r in ("r1", "r2", "r3")]
    assert all(r["status"] == "completed" and r["steps"] == 400 for r in results)
    assert any(r["resumed_from_step"] for r in results)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_retry_resumes_a_run_whose_worker_died_but_reruns_a_run_that_raised(project):
    runs, _, _ = sweep.prepare(project.selection())
    died, raised = runs
    for run in runs:
        run.dir.mkdir(parents=True)
        torch.save({"global_step": 2}, run.dir / "last.ckpt")
    record = execute.record_death(died, pool.death(-signal.SIGKILL), time.time() + 1)
    assert record["status"] == "failed" and record["error"].startswith("worker died with signal 9")
    assert record["worker_death"] == pool.death(-signal.SIGKILL)  # the field, not a prefix
    results.write(raised.dir, execute.failed(raised, "ValueError: x", 1))
    for run in runs:
        folders.plan(run)
    assert [r.action for r in runs] == ["skip", "skip"]
    for run in runs:
        run.retry_failed = True
        folders.plan(run)
    assert [r.action for r in runs] == ["resume", "run"]


# --- threads and cores -----------------------------------------------------------------


@pytest.mark.parametrize(
    "width, layers, cap, threads",
    [
        (16, 1, 16, 1),
        (256, 1, 16, 1),
        (256, 4, 16, 2),
        (512, 1, 16, 2),
        (1024, 1, 16, 5),
        (1024, 1, 2, 2),
        (4096, 1, 8, 8),
        (512, 1, 1, 1),
    ],
)
def test_narrow_runs_get_one_thread_and_wide_runs_more_within_the_cap(width, layers, cap, threads):
    work = 32 * 64 * layers * width**2  # the default batch: 32 x 64 tokens
    assert pool.threads_for(work, cap) == threads


@settings(max_examples=200, deadline=None)
@given(
    works=st.lists(st.floats(0, 1e12), max_size=30),
    cores=st.integers(1, 16),
    workers=st.integers(1, 20),
    seed=st.randoms(use_true_random=False),
)
def test_the_threads_in_use_never_exceed_the_cores(works, cores, workers, seed):
    threads = [pool.threads_for(w, cores) for w in works]
    schedule = pool.Scheduler(threads, cores, workers)
    running, started = [], []
    while not schedule.done:
        while (index := schedule.next()) is not None:
            running.append(index)
            started.append(index)
        assert sum(threads[i] for i in running) <= cores
        assert 1 <= len(running) <= workers  # never stuck with nothing running
        schedule.finish(running.pop(seed.randrange(len(running))))
    assert started == list(range(len(works)))  # each once, in the given (longest-first) order


def test_cores_come_from_the_affinity_and_slurm_and_omp_caps_threads():
    cores = len(os.sched_getaffinity(0))
    assert pool.available_cores({}) == cores
    assert pool.available_cores({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert pool.thread_cap(8, {}) == 8
    assert pool.thread_cap(8, {"OMP_NUM_THREADS": "1"}) == 1
    assert pool.thread_cap(8, {"OMP_NUM_THREADS": "64"}) == 8


DEFAULT_RUN = 300 * 32 * 64 * (32**2 + 4096)  # the cost of a width-32 run of configs/sweep.yaml


@pytest.mark.parametrize(
    "requested, runs, cost, cores, expected",
    [
        (None, 40, DEFAULT_RUN, 2, 2),  # the default sweep: one worker per core
        (None, 40, DEFAULT_RUN, 64, 40),  # no more workers than runs
        (None, 1, DEFAULT_RUN, 16, 1),
        (None, 0, DEFAULT_RUN, 4, 1),
        (None, 4, 1e6, 2, 1),  # four tiny runs: starting workers would take longer
        (None, 40, 1e6, 2, 2),  # forty: ~40 s alone, ~25 s on two workers
        (3, 40, DEFAULT_RUN, 2, 3),  # a number is taken as given
        (2, 2, 1e6, 16, 2),
        (1, 40, DEFAULT_RUN, 16, 1),
    ],
)
def test_auto_is_one_worker_per_core_where_workers_pay(requested, runs, cost, cores, expected):
    assert pool.resolve_workers(requested, [cost] * runs, cores, slurm=False) == expected


def test_auto_is_one_worker_for_runs_on_an_accelerator():
    assert pool.resolve_workers(None, [DEFAULT_RUN] * 40, 16, slurm=False, on_cpu=False) == 1
    assert pool.resolve_workers(4, [DEFAULT_RUN] * 40, 16, slurm=False, on_cpu=False) == 4


# --- the flag ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "autox", "two", ""])
def test_a_bad_workers_value_is_one_line_and_exit_2(project, capsys, value):
    assert main(project.args(f"--workers={value}")) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: --workers"), err
    assert not project.runs.exists()


@pytest.mark.parametrize("value, expected", [("auto", None), ("1", 1), ("12", 12), (3, 3)])
def test_workers_values(value, expected):
    assert pool.parse_workers(value) == expected


def test_under_srun_auto_is_one_worker_and_more_is_refused(project, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "sweep")
    assert sweep.under_slurm()
    assert pool.resolve_workers(None, [DEFAULT_RUN] * 40, 16, slurm=True) == 1
    with pytest.raises(ConfigError, match="--workers 4: under srun"):
        pool.resolve_workers(4, [DEFAULT_RUN] * 40, 16, slurm=True)
    assert main(project.args("--workers", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: --workers 2: under srun" in err[0] and "--total_jobs" in err[0]
    calls = []
    monkeypatch.setattr(sweep, "sequential", lambda todo, threads: calls.append(threads) or [])
    runs, job, _ = sweep.prepare(project.selection())
    assert sweep.sweep(runs, job, None) == []
    assert calls == [[None, None]]  # one at a time, threads left to srun and Lightning
