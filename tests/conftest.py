"""Shared fixtures: tiny, CPU-only, seeded runs whose output goes to tmp_path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_lightning.sweep import Selection

# One thread: the suite runs beside other work on 2 cores, where OpenMP spinning on a
# busy core makes multi-threaded steps orders of magnitude slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_args(tmp_path, *extra: str, steps: int = 4) -> list[str]:
    """Flags for a run that takes seconds: width 16, 32k synthetic tokens, no bar."""
    return [
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--model.hidden_size",
        "16",
        "--model.base_hidden_size",
        "16",
        "--data.synthetic_tokens",
        "32768",
        "--data.synthetic_states",
        "16",
        "--data.synthetic_vocab",
        "16",
        "--data.seq_len",
        "16",
        "--data.batch_size",
        "8",
        *extra,
    ]


@pytest.fixture
def tiny(tmp_path):
    """``tiny(*extra, steps=4)``: CLI flags for a tiny run writing under tmp_path."""
    return lambda *extra, steps=4: tiny_args(tmp_path, *extra, steps=steps)


# --- runner ---
# The sweep's tests (test_sweep, test_workers, test_faults, test_slurm_*): one tiny base
# config, a project fixture around it, and the local SLURM cluster's helpers.

ROOT = Path(__file__).parent.parent

TINY_BASE = {
    "seed_everything": 0,
    "trainer": {
        "max_steps": 8,
        "val_check_interval": 8,
        "check_val_every_n_epoch": None,
        "limit_val_batches": 2,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 4,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
    },
    "checkpoint": {"every_n_train_steps": 4},
    "model": {"hidden_size": 16, "base_hidden_size": 16, "learning_rate": 0.01},
    "data": {
        "synthetic_tokens": 16384,
        "synthetic_states": 8,
        "synthetic_vocab": 8,
        "seq_len": 8,
        "batch_size": 4,
    },
}


def run_cli(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in a fresh interpreter, one thread, output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, **popen) -> subprocess.Popen:
    """``python cli.py ARGS`` started in the background, one thread, stderr piped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    popen = {"stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "cli.py", *args], cwd=ROOT, env=env, **popen)


def group(name: str, *runs: tuple[str, dict]) -> dict:
    """An experiment group of ``(label, overrides)`` sub-experiments."""
    return {"name": name, "subexperiments": [{"label": lb, "overrides": o} for lb, o in runs]}


class Project:
    """A base config and a definitions file in a folder; ``defs(...)`` rewrites the groups."""

    def __init__(self, where: Path):
        self.config, self.definitions = where / "base.yaml", where / "defs.py"
        self.runs = where / "runs"
        self.config.write_text(yaml.safe_dump(TINY_BASE))
        self.defs(group("g", ("a", {"learning_rate": 0.02}), ("b", {"hidden_size": 24})))

    def defs(self, *groups: dict, extra: str = "") -> None:
        self.definitions.write_text(
            f"EXPERIMENTS = {groups!r}\n"
            + "".join(f"{g['name'].upper()} = {g!r}\n" for g in groups)
            + extra
        )

    def base(self, **trainer) -> None:
        """Change trainer keys of the base config."""
        base = yaml.safe_load(self.config.read_text())
        base["trainer"].update(trainer)
        self.config.write_text(yaml.safe_dump(base))

    def args(self, *extra: str, runs: Path | None = None) -> list[str]:
        return [
            "sweep",
            "--config",
            str(self.config),
            "--definitions",
            str(self.definitions),
            "--runs_dir",
            str(runs or self.runs),
            *extra,
        ]

    def selection(self, **more):
        """The ``sweep.Selection`` of ``args()``."""
        where = {"config": str(self.config), "definitions": str(self.definitions)}
        return Selection(**where, runs_dir=str(self.runs), **more)

    def result(self, grp: str, label: str, runs: Path | None = None) -> dict:
        return json.loads(((runs or self.runs) / grp / label / "result.json").read_text())


@pytest.fixture
def project(tmp_path):
    """A tiny base config and a definitions file (group g: runs a and b) in tmp_path."""
    return Project(tmp_path)


def scalar_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run's TensorBoard events hold: tag -> [(step, value)]."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


# The local SLURM cluster (scripts/slurm_cluster.sh), for the -m slurm tests.
SLURM_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
SLURM_START_TIMEOUT_S = 900  # a cold start installs packages with apt-get


def slurm_run(args, env, timeout=60, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def _start_cluster(env) -> tuple[subprocess.CompletedProcess | None, str]:
    """Run `start`; return the process and, when it did not work, why."""
    if sys.platform != "linux":
        return None, "the SLURM cluster script needs Linux"
    try:
        proc = slurm_run([SLURM_SCRIPT, "start"], env, timeout=SLURM_START_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"slurm_cluster.sh start did not run: {exc}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        # The script's own one-line diagnosis, else the end of whatever it printed.
        errors = [line for line in lines if line.startswith("slurm_cluster: ERROR")]
        why = " | ".join(errors or lines[-3:])
        return proc, f"slurm_cluster.sh start failed (exit {proc.returncode}): {why}"
    return proc, ""


@pytest.fixture(scope="module")
def slurm_env():
    """Environment whose SLURM_CONF points at the running private cluster. Without a
    usable cluster the test skips, except under CI=true, where it fails."""
    env = os.environ.copy()
    env.pop("SLURM_CONF", None)
    status = [SLURM_SCRIPT, "status"]
    was_up = SLURM_SCRIPT.exists() and slurm_run(status, env, check=False).returncode == 0
    proc, why = _start_cluster(env)
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    exports = slurm_exports(proc.stdout)
    assert "SLURM_CONF" in exports, f"start printed no export line: {proc.stdout!r}"
    env.update(exports)
    yield env
    # Leave a cluster someone else started running; stop the one started here.
    if not was_up:
        slurm_run([SLURM_SCRIPT, "stop"], env, check=False)


def slurm_exports(stdout: str) -> dict[str, str]:
    """The ``export NAME=value`` lines slurm_cluster.sh prints."""
    return dict(re.findall(r"^export (\w+)=(\S+)$", stdout, flags=re.MULTILINE))


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def queued(env, jobs: list[str]) -> str:
    """squeue's "id state" lines for ``jobs`` ('' once they left the queue)."""
    return slurm_run(
        ["squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T"], env, check=False
    ).stdout.strip()
