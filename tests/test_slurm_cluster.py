"""Integration tests against a real one-node SLURM cluster (scripts/slurm_cluster.sh).

The module fixture starts the private slurmctld + slurmd (installing Debian's packages
if needed) and the tests submit real jobs through its SLURM_CONF. Completion is read
from the jobs' own output files, since the cluster has no accounting (no sacct).
Without a usable cluster the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import SLURM_SCRIPT, queued, slurm_exports, slurm_run, wait_until

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).parent.parent
JOB_TIMEOUT_S = 60
# A requeued job may only start again after the credential lifetime (cred_expire=10
# in the generated slurm.conf) plus KillWait.
REQUEUE_TIMEOUT_S = 90


@pytest.fixture
def submit(slurm_env):
    """sbatch wrapper that cancels whatever it submitted when the test ends."""
    jobs: list[str] = []

    def _submit(*args: str) -> str:
        out = slurm_run(["sbatch", "--parsable", *args], slurm_env).stdout.strip()
        job = out.split(";")[0]
        jobs.append(job)
        return job

    yield _submit
    if jobs:
        slurm_run(["scancel", *jobs], slurm_env, check=False)
        wait_until(lambda: not queued(slurm_env, jobs), 30, "cancelled jobs to leave the queue")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _pid(env, daemon: str) -> str:
    run_dir = Path(env["SLURM_CONF"]).parent.parent / "run"
    return (run_dir / f"{daemon}.pid").read_text().strip()


def test_node_is_idle_with_all_cpus(slurm_env):
    out = slurm_run(["sinfo", "-h", "-N", "-o", "%N %T %c %P"], slurm_env).stdout.split()
    nproc = str(len(os.sched_getaffinity(0)))  # nproc, without OMP_NUM_THREADS capping it
    assert out[1] == "idle", out
    assert out[2] == nproc, out
    assert out[3] == "debug*", out  # the default partition


def test_throttled_array_runs_each_task_once(slurm_env, submit, tmp_path):
    script = (
        "echo $(date +%s.%N) $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN;"
        " sleep 1; date +%s.%N"
    )
    job = submit("--array=0-3%2", "-o", f"{tmp_path}/task-%a.out", "--wrap", script)
    files = [tmp_path / f"task-{i}.out" for i in range(4)]
    wait_until(lambda: all(len(_lines(f)) == 5 for f in files), JOB_TIMEOUT_S, f"array {job}")

    rows = [_lines(f) for f in files]
    assert sorted(int(r[1]) for r in rows) == [0, 1, 2, 3]
    assert {(r[2], r[3]) for r in rows} == {("4", "0")}  # SLURM_ARRAY_TASK_COUNT, _MIN
    # %2: never more than two tasks alive at the same moment.
    spans = [(float(r[0]), float(r[4])) for r in rows]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= 2, spans


def test_srun_two_tasks_get_ranks_0_and_1(slurm_env, submit, tmp_path):
    script = (
        f"srun -n 2 bash -c 'echo $SLURM_PROCID $SLURM_NTASKS > {tmp_path}/rank-$SLURM_PROCID.out'"
    )
    job = submit(
        "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "-o", "/dev/null", "--wrap", script
    )
    files = [tmp_path / f"rank-{i}.out" for i in range(2)]
    wait_until(lambda: all(len(_lines(f)) == 2 for f in files), JOB_TIMEOUT_S, f"job {job}")
    assert [_lines(f) for f in files] == [["0", "2"], ["1", "2"]]


# Lightning's auto-requeue in miniature: a USR1 handler that runs `scontrol requeue`
# and then, like Lightning, shrugs off the SIGTERM that the requeue sends.
HANDLER = """
import os, signal, subprocess, sys, time
out = sys.argv[1]
restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
def log(msg):
    with open(out, "a") as f:
        f.write(msg + "\\n")
def on_usr1(signum, frame):
    log("usr1")
    subprocess.call(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]])
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, lambda signum, frame: None)
log("start" + restarts)
if restarts == "0":
    time.sleep(120)
"""


def test_usr1_requeue_reruns_the_job(slurm_env, submit, tmp_path):
    """The delivery forms that reach the training process (see scripts/slurm_cluster.sh).

    (a) python is the batch script itself (`exec`): only the batch step is signalled,
        `scancel --signal=USR1 --batch` (what `--signal=B:USR1@90` does at the limit);
    (b) python under srun: the job's steps are signalled, `scancel --signal=USR1`
        (what `--signal=USR1@90` does at the limit).
    """
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    cases = {
        "exec": (f"exec {sys.executable} {handler} {tmp_path}/exec.log", ["--batch"]),
        "srun": (f"srun -n 1 {sys.executable} {handler} {tmp_path}/srun.log", []),
    }
    jobs = {}
    for name, (command, _) in cases.items():
        jobs[name] = submit(
            "--requeue",
            "--ntasks=1",
            "--signal=B:USR1@90" if name == "exec" else "--signal=USR1@90",
            "-o",
            "/dev/null",
            "--wrap",
            command,
        )
    logs = {name: tmp_path / f"{name}.log" for name in cases}
    wait_until(
        lambda: all("start0" in _lines(p) for p in logs.values()),
        JOB_TIMEOUT_S,
        "both jobs to start",
    )
    for name, (_, flags) in cases.items():
        slurm_run(["scancel", "--signal=USR1", *flags, jobs[name]], slurm_env)
    wait_until(
        lambda: all("start1" in _lines(p) for p in logs.values()),
        REQUEUE_TIMEOUT_S,
        "both jobs to run again with SLURM_RESTART_COUNT=1",
    )
    assert {name: _lines(p) for name, p in logs.items()} == {
        name: ["start0", "usr1", "start1"] for name in cases
    }


def test_start_twice_is_idempotent(slurm_env):
    pids = {d: _pid(slurm_env, d) for d in ("munged", "slurmctld", "slurmd")}
    again = slurm_run([SLURM_SCRIPT, "start"], slurm_env, timeout=60)
    assert slurm_exports(again.stdout) == {"SLURM_CONF": slurm_env["SLURM_CONF"]}
    assert "already running" in again.stderr
    assert {d: _pid(slurm_env, d) for d in pids} == pids
    assert slurm_run([SLURM_SCRIPT, "status"], slurm_env).stdout.startswith("up")
    assert (
        slurm_run([SLURM_SCRIPT, "env"], slurm_env).stdout.strip()
        == f"export SLURM_CONF={slurm_env['SLURM_CONF']}"
    )
