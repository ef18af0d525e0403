"""Sweeps through ``cli.py slurm --submit`` on the real local cluster (scripts/slurm_cluster.sh).

Every job is a real sbatch array written by the project; completion is read from
``squeue`` and from the files the runs leave (the cluster keeps no accounting). The
runs are tiny (width 16, an 8-state synthetic language) so that python's start-up, not
training, dominates; the requeue test also waits out SLURM's requeue delay (~10-20 s).
Without a usable cluster the tests skip, except under CI=true, where they fail (the
``slurm_env`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_lightning.runs import set_path
from tests.conftest import TINY_BASE, queued, run_cli, slurm_run, wait_until

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).parent.parent
JOB_NAME = "lstm_lightning"  # cli.py slurm's default --job_name: the log file prefix
ARRAY_TIMEOUT_S = 180
RUN_TIMEOUT_S = 120
# Start-up (~10 s), the signal, the requeue delay (cred_expire=10 + KillWait), the rest.
REQUEUE_TIMEOUT_S = 240


def _derived_base() -> dict:
    """test_sweep's tiny base, with runs long enough to signal and a batch DDP can split."""
    base = copy.deepcopy(TINY_BASE)
    changes = {
        "trainer.max_steps": 30,
        "trainer.val_check_interval": 30,
        "trainer.limit_val_batches": 4,
        "trainer.log_every_n_steps": 5,
        "checkpoint.every_n_train_steps": 10,
        "data.batch_size": 8,
    }
    for path, value in changes.items():
        set_path(base, path, value)
    return base


BASE = _derived_base()


def group(name: str, runs: dict[str, dict]) -> dict:
    return {
        "name": name,
        "subexperiments": [{"label": lb, "overrides": o} for lb, o in runs.items()],
    }


def write_project(where: Path, *groups: dict) -> tuple[Path, Path]:
    """A base config and a definitions file naming each group by its own name."""
    where.mkdir(parents=True, exist_ok=True)
    config, defs = where / "base.yaml", where / "defs.py"
    config.write_text(yaml.safe_dump(BASE))
    defs.write_text("".join(f"{g['name']} = {g!r}\n" for g in groups))
    return config, defs


def selection(config: Path, defs: Path, runs_dir: Path, experiments: str) -> list[str]:
    return [
        "--config",
        str(config),
        "--definitions",
        str(defs),
        "--runs_dir",
        str(runs_dir),
        "--experiments",
        experiments,
    ]


def cli(env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python cli.py ...`` with this interpreter, from the checkout; must succeed."""
    proc = run_cli(*args, timeout=timeout, env=env)
    assert proc.returncode == 0, f"cli.py {args[0]} exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def submit_sweep(env, select: list[str], *job: str, setup: str | None = None) -> tuple[str, Path]:
    """``cli.py slurm ... --submit``: the array job id and the script it wrote."""
    where = ["--python", sys.executable, "--workdir", str(ROOT)]
    extra = ["--setup", setup] if setup else []
    out = cli(env, "slurm", *select, *job, *where, *extra, "--submit").stdout.split()
    assert len(out) == 2 and out[1].isdigit(), out  # the script's path, then the job id
    return out[1], Path(out[0])


# Each task's log gets its own start and end time (and the restart count), so the
# tests can tell which tasks overlapped: SLURM forgets finished jobs after MinJobAge.
TIMESTAMPS = (
    "trap 'echo END $(date +%s.%N)' EXIT; "
    "echo START $(date +%s.%N) ${SLURM_ARRAY_TASK_ID} ${SLURM_RESTART_COUNT:-0}"
)


def wait_for_job(env, job: str, timeout: float) -> float:
    """Wait until no task of ``job`` is queued or running; return the seconds waited."""
    start = time.monotonic()
    wait_until(lambda: not queued(env, [job]), timeout, f"job {job} to leave the queue")
    return time.monotonic() - start


def cancel(env, job: str) -> None:
    """Cancel whatever of ``job`` is still queued (a failed test must not leave it)."""
    if queued(env, [job]):
        slurm_run(["scancel", job], env, check=False)
        wait_until(lambda: not queued(env, [job]), 30, f"cancelled job {job} to leave")


def task_logs(runs_dir: Path, job: str) -> dict[int, str]:
    """Task id -> its log text (``--output`` is <runs_dir>/slurm/%x_%A_%a.out)."""
    pattern = re.compile(rf"{JOB_NAME}_{job}_(\d+)\.out")
    return {
        int(m.group(1)): p.read_text()
        for p in (runs_dir / "slurm").iterdir()
        if (m := pattern.fullmatch(p.name))
    }


def spans(logs: dict[int, str]) -> dict[int, tuple[float, float]]:
    """Task id -> (start, end) from the TIMESTAMPS lines."""
    found = {}
    for task, text in logs.items():
        start = re.search(r"^START (\S+)", text, re.M)
        end = re.search(r"^END (\S+)", text, re.M)
        assert start and end, f"task {task} log lacks START/END:\n{text}"
        found[task] = (float(start.group(1)), float(end.group(1)))
    return found


def most_at_once(intervals) -> int:
    """The largest number of intervals alive at one moment (at some interval's start)."""
    intervals = list(intervals)
    return max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)


def started_runs(text: str) -> list[str]:
    """group/label of every run a sweep log says it started (``[sweep] run k/n G/L (...)``)."""
    return re.findall(r"^\[sweep\] run \d+/\d+ (\S+) \(", text, re.M)


def results(runs_dir: Path) -> dict[str, dict]:
    """group/label -> parsed result.json, for every run below ``runs_dir``."""
    return {
        f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
        for p in runs_dir.glob("*/*/result.json")
    }


def report_rows(env, runs_dir: Path) -> list[dict]:
    cli(env, "report", "--runs_dir", str(runs_dir))
    with open(runs_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over every events file in ``run_dir``."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def local_sweep(env, select: list[str]) -> subprocess.Popen:
    """The reference: the same selection as one plain process on this machine, no SLURM."""
    return subprocess.Popen(
        [sys.executable, "cli.py", "sweep", *select],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1"},  # as the job's script sets it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"local sweep exit {proc.returncode}: {err[-2000:]}"


# --- a. a throttled array runs every run exactly once -------------------------------------


def test_throttled_array_runs_every_run_exactly_once(slurm_env, tmp_path):
    started = time.monotonic()
    lrs = [0.002 * 2**i for i in range(8)]  # an lr sweep: 8 runs, 2 per task
    runs = {f"lr{lr:g}": {"learning_rate": lr} for lr in lrs}
    config, defs = write_project(tmp_path, group("LR", runs))
    runs_dir = tmp_path / "runs"
    select = selection(config, defs, runs_dir, "LR")
    job, script = submit_sweep(
        slurm_env, select, "--total_jobs", "4", "--array_parallelism", "2", setup=TIMESTAMPS
    )
    try:
        assert "#SBATCH --array=0-3%2\n" in script.read_text()
        # Sample squeue as well: the timestamps below only bound the script's lifetime.
        running, reasons = [], set()
        deadline = time.monotonic() + ARRAY_TIMEOUT_S
        while queue := slurm_run(["squeue", "-h", "-j", job, "-o", "%T %r"], slurm_env).stdout:
            assert time.monotonic() < deadline, f"array {job} still queued:\n{queue}"
            states = [line.split() for line in queue.splitlines()]
            running.append(sum(state == "RUNNING" for state, _ in states))
            reasons |= {reason for state, reason in states if state == "PENDING"}
            time.sleep(0.5)
    finally:
        cancel(slurm_env, job)

    logs = task_logs(runs_dir, job)
    assert sorted(logs) == [0, 1, 2, 3], logs
    # Each run was started by exactly one task, once, and no run by none.
    ran = [name for text in logs.values() for name in started_runs(text)]
    assert sorted(ran) == sorted(f"LR/{label}" for label in runs), ran
    for task, text in logs.items():
        assert re.search(rf"^\[sweep\] shard {task}: 2 runs, 0 already done", text, re.M), text
    assert max(running) <= 2, running
    assert most_at_once(spans(logs).values()) <= 2, spans(logs)
    # One events file per run folder: no run was trained twice (a rerun would add one).
    done = results(runs_dir)
    assert sorted(done) == sorted(f"LR/{label}" for label in runs)
    for name, result in done.items():
        outcome = (result["status"], result["steps"], result["world_size"])
        assert outcome == ("completed", BASE["trainer"]["max_steps"], 1), name
        assert len(list((runs_dir / name).glob("events.out.tfevents.*"))) == 1, name
    rows = report_rows(slurm_env, runs_dir)
    assert sorted((r["group"], r["label"], r["status"]) for r in rows) == sorted(
        ("LR", label, "completed") for label in runs
    )
    wall = time.monotonic() - started
    print(
        f"\n[a] 8 runs, 4 tasks, %2: {wall:.1f} s wall (submit to report); most running "
        f"at once: {max(running)} by squeue, {most_at_once(spans(logs).values())} by the logs; "
        f"pending reasons seen: {sorted(reasons)}"
    )


# --- b. DDP: two srun tasks equal one process on the same global batch --------------------

DDP_RUN = {"max_steps": 60, "val_check_interval": 60}


@pytest.fixture(scope="module")
def ddp(slurm_env, tmp_path_factory):
    """One run as a 2-rank DDP job under srun, and the same run as one local process."""
    where = tmp_path_factory.mktemp("ddp")
    config, defs = write_project(where, group("DDP", {"w16": DDP_RUN}))
    select = {name: selection(config, defs, where / name, "DDP") for name in ("slurm", "local")}
    started = time.monotonic()
    job, _ = submit_sweep(
        slurm_env, select["slurm"], "--total_jobs", "1", "--devices_per_node", "2"
    )
    try:
        reference = local_sweep(slurm_env, select["local"])
        wait_for_job(slurm_env, job, RUN_TIMEOUT_S)
        finish(reference)
    finally:
        cancel(slurm_env, job)
    print(f"\n[b] DDP job and local reference: {time.monotonic() - started:.1f} s")
    return {name: where / name / "DDP" / "w16" for name in ("slurm", "local")} | {
        "log": "".join(task_logs(where / "slurm", job).values())
    }


def test_ddp_run_matches_one_process_on_the_same_global_batch(ddp):
    ran = json.loads((ddp["slurm"] / "result.json").read_text())
    ref = json.loads((ddp["local"] / "result.json").read_text())
    assert ran["status"] == "completed", ddp["log"]
    assert (ran["world_size"], ref["world_size"]) == (2, 1)
    assert ran["steps"] == ref["steps"] == DDP_RUN["max_steps"]
    # It learned: the train loss fell from the uniform guess (log 8 = 2.08) by a margin
    # far above step-to-step noise, and the final val loss is well below that guess.
    curve = [v for _, v in scalars(ddp["slurm"])["train/loss"]]
    assert curve[-1] < curve[0] - 0.2, curve
    assert ran["metrics"]["val/loss"] < math.log(8) - 0.2, ran["metrics"]
    # Same global batch, so the same run up to float rounding: each rank's loss is the
    # mean over its half, DDP averages the two gradients, so the sums differ only in
    # order (two partial sums plus gloo's all-reduce against one sum of 64 tokens).
    # Measured after 60 Adam steps: weights within 2.4e-7 (about 1 ulp of values up to
    # 2.6), val/loss identical to all 17 printed digits. 1e-5 (40x that) leaves room for
    # the rounding to grow with more steps and still catches a real difference, such as
    # a rank training on the wrong half of the batch.
    mine, theirs = weights(ddp["slurm"] / "last.ckpt"), weights(ddp["local"] / "last.ckpt")
    for key in theirs:
        assert torch.allclose(mine[key], theirs[key], rtol=0, atol=1e-5), key
    val, val_ref = ran["metrics"]["val/loss"], ref["metrics"]["val/loss"]
    print(f"\n[b] val/loss: DDP 2 ranks {val!r}, one process {val_ref!r}")
    assert val == pytest.approx(val_ref, rel=1e-5)


def test_ddp_result_records_the_global_batch_train_loss(ddp):
    """result.json's train/loss is documented as the run's final training loss; under DDP
    that is the loss of the global batch (the mean over the ranks), as one process has it."""
    ran = json.loads((ddp["slurm"] / "result.json").read_text())
    ref = json.loads((ddp["local"] / "result.json").read_text())
    train, train_ref = ran["metrics"]["train/loss"], ref["metrics"]["train/loss"]
    print(f"\n[b] final train/loss: DDP 2 ranks {train!r}, one process {train_ref!r}")
    # Same tolerance and reason as for val/loss above.
    assert train == pytest.approx(train_ref, rel=1e-5)


# --- c. SIGUSR1: checkpoint, requeue, resume, same result --------------------------------

# Long enough to signal mid-run at about step 100 of 1000 (~7 ms a step); the periodic
# last.ckpt never comes before the end, so the resume must use the hpc checkpoint.
LONG_RUN = {
    "max_steps": 1000,
    "val_check_interval": 1000,
    "checkpoint.every_n_train_steps": 100_000,
}
SIGNAL_AFTER_STEP = 100


def trained_steps(run_dir: Path) -> int:
    """The last step with a logged train/loss (the writer flushes every ~10 events)."""
    try:
        return max((s for s, _ in scalars(run_dir).get("train/loss", [])), default=-1)
    except Exception:  # noqa: BLE001 - an events file caught mid-write: not there yet
        return -1


@pytest.fixture(scope="module")
def requeued(slurm_env, tmp_path_factory):
    """A 1-task array signalled with SIGUSR1 mid-run, and the same run uninterrupted."""
    where = tmp_path_factory.mktemp("requeue")
    config, defs = write_project(where, group("REQ", {"long": LONG_RUN}))
    select = {name: selection(config, defs, where / name, "REQ") for name in ("slurm", "local")}
    run_dir = where / "slurm" / "REQ" / "long"
    # The task log is truncated when the requeued task starts again: keep every start.
    starts = where / "starts.txt"
    setup = f"echo START ${{SLURM_RESTART_COUNT:-0}} >> {shlex.quote(str(starts))}"
    started = time.monotonic()
    job, _ = submit_sweep(slurm_env, select["slurm"], "--total_jobs", "1", setup=setup)
    try:
        wait_until(
            lambda: trained_steps(run_dir) >= SIGNAL_AFTER_STEP,
            RUN_TIMEOUT_S,
            f"run {run_dir} to log step {SIGNAL_AFTER_STEP}",
        )
        assert not (run_dir / "result.json").exists(), "the run ended before the signal"
        # To the task's srun step, as --signal=SIGUSR1@90 does at the time limit.
        slurm_run(["scancel", "--signal=USR1", f"{job}_0"], slurm_env)
        reference = local_sweep(slurm_env, select["local"])  # during the requeue delay
        wait_for_job(slurm_env, job, REQUEUE_TIMEOUT_S)
        finish(reference)
    finally:
        cancel(slurm_env, job)
    print(f"\n[c] requeued job and local reference: {time.monotonic() - started:.1f} s")
    return {
        "run": run_dir,
        "local": where / "local" / "REQ" / "long",
        "starts": starts.read_text().splitlines(),
        "log": "".join(task_logs(where / "slurm", job).values()),
    }


def test_usr1_checkpoints_requeues_and_resumes_exactly(requeued):
    run, log = requeued["run"], requeued["log"]
    # On SIGUSR1 the run saved hpc_ckpt_1.ckpt in its own folder between two steps and
    # requeued the task; once the resumed run completed, the spent checkpoint was removed.
    saved = re.search(r"\[requeue\] saved (\S+/hpc_ckpt_1\.ckpt); requeued SLURM job", log)
    assert saved and Path(saved.group(1)).parent == run, log
    assert not list(run.glob("hpc_ckpt_*.ckpt"))
    result = json.loads((run / "result.json").read_text())
    hpc_step = result["resumed_from_step"]
    assert 0 < hpc_step < LONG_RUN["max_steps"], hpc_step
    # Requeued and run again: two starts, the second with SLURM_RESTART_COUNT=1.
    assert requeued["starts"] == ["START 0", "START 1"], requeued["starts"]
    assert "[sweep] run 1/1 REQ/long (resume)" in log, log
    assert result["status"] == "completed", log
    assert result["steps"] == LONG_RUN["max_steps"]
    # The resumed training is the uninterrupted one, bit for bit (CPU, one thread): the
    # checkpoint carries the data position, the TBPTT state and the RNG.
    mine, theirs = weights(run / "last.ckpt"), weights(requeued["local"] / "last.ckpt")
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key


def test_requeued_run_records_the_uninterrupted_result(requeued):
    """Same weights (above), so the same final val/loss, exactly; and the same best and
    final train loss. No tolerance: any difference is a bug in what gets recorded."""
    got = json.loads((requeued["run"] / "result.json").read_text())["metrics"]
    want = json.loads((requeued["local"] / "result.json").read_text())["metrics"]
    print(
        f"\n[c] final val/loss: requeued {got['val/loss']!r}, uninterrupted {want['val/loss']!r}"
        f"; val/loss_best {got['val/loss_best']!r} vs {want['val/loss_best']!r}"
    )
    assert got["train/loss"] == want["train/loss"]
    assert got["val/loss"] == want["val/loss"]
    assert got["val/loss_best"] == want["val/loss_best"]


def test_requeued_run_logs_the_uninterrupted_curves(requeued):
    """Every point the interrupted and the resumed attempt logged is the uninterrupted
    run's point at that step, and validation ran at the same steps (here: once, at the
    end). Exact, for the same reason as the weights."""
    got, want = scalars(requeued["run"]), scalars(requeued["local"])
    for tag in ("train/loss", "val/loss"):
        ref = dict(want[tag])
        wrong = [(step, value, ref.get(step)) for step, value in got[tag] if value != ref.get(step)]
        assert not wrong, f"{tag}: (step, logged, uninterrupted) {wrong[:5]} of {len(got[tag])}"
    assert [s for s, _ in got["val/loss"]] == [s for s, _ in want["val/loss"]]


# --- d. two tasks writing into one runs_dir at once -------------------------------------


def test_two_concurrent_tasks_share_one_runs_dir(slurm_env, tmp_path):
    # Equal costs, so the shards alternate (A/a1, B/b1 -> 0; A/a2, B/b2 -> 1): both
    # tasks write into both group folders at the same time.
    short = {"max_steps": 20, "val_check_interval": 20}
    groups = [group(g, {f"{g.lower()}{i}": short for i in (1, 2)}) for g in ("A", "B")]
    config, defs = write_project(tmp_path, *groups)
    runs_dir = tmp_path / "runs"
    select = selection(config, defs, runs_dir, "A,B")
    job, _ = submit_sweep(slurm_env, select, "--total_jobs", "2", setup=TIMESTAMPS)
    try:
        wait_for_job(slurm_env, job, ARRAY_TIMEOUT_S)
    finally:
        cancel(slurm_env, job)

    names = sorted(f"{g['name']}/{s['label']}" for g in groups for s in g["subexperiments"])
    logs = task_logs(runs_dir, job)
    assert sorted(logs) == [0, 1], logs
    assert most_at_once(spans(logs).values()) == 2, f"the tasks did not overlap: {spans(logs)}"
    for text in logs.values():  # each task ran one run of each group
        assert sorted(n.split("/")[0] for n in started_runs(text)) == ["A", "B"], text
    assert sorted(n for text in logs.values() for n in started_runs(text)) == names
    done = results(runs_dir)  # every result.json parses (json.loads)
    assert sorted(done) == names
    for name, result in done.items():
        assert (result["group"], result["label"]) == tuple(name.split("/"))
        assert (result["status"], result["steps"]) == ("completed", 20), name
        assert (runs_dir / name / "last.ckpt").exists(), name
    leftovers = [str(p) for p in runs_dir.rglob("*.tmp")]
    assert not leftovers, leftovers
    rows = report_rows(slurm_env, runs_dir)
    assert sorted(f"{r['group']}/{r['label']}" for r in rows) == names
    assert {r["status"] for r in rows} == {"completed"}
