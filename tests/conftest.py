"""Shared fixtures: tiny, CPU-only, seeded runs whose output goes to tmp_path."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_lightning.report import write_report
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


# --- entry ---


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """{tag: values} of every scalar TensorBoard holds for ``run_dir``, in step order."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class SignalAt(Callback):
    """Sends this process ``signum`` once, at the end of the batch reaching ``step``: a
    user's Ctrl-C or a scheduler's SIGTERM, at a known step (``--trainer.callbacks``)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def signal_at(step: int, signum: int) -> list[str]:
    """Flags adding ``SignalAt(step, signum)`` to a run's callbacks."""
    callback = {"class_path": "tests.conftest.SignalAt", "init_args": {"step": step}}
    callback["init_args"]["signum"] = int(signum)
    return ["--trainer.callbacks", json.dumps([callback])]


# --- report ---


class FakeRuns:
    """Writers of result.json files for the report's tests (``fake_runs``): one run,
    a small mixed sweep, or a whole lr grid from a loss function."""

    GRID = np.arange(-7.0, 1.0)  # (8,) log2 lrs 2^-7 .. 2^0, as the sweeps use
    # muP: every width's optimum at 2^-3.3; SP's moves 2.35 octaves. The transfer case.
    MUP_OPTIMA = {16: -3.3, 64: -3.3, 256: -3.3}
    SP_OPTIMA = {16: -3.25, 64: -4.25, 256: -5.6}

    @staticmethod
    def write_result(
        root: Path,
        group: str,
        label: str,
        *,
        param: str = "mup",
        opt: str = "sgd",
        width: int = 16,
        lr: float = 2.0**-4,
        seed: int = 0,
        status: str = "completed",
        val_loss: float | None = 1.9,
        diverged_at_step: int | None = None,
        error: str | None = None,
        **fields,
    ) -> Path:
        """Write ``root/group/label/result.json`` as schema 1's doc laid it out; ``fields``
        replace or add top-level fields (``schema=2, worker_death=...``)."""

        def loss(delta: float) -> float | None:
            return None if val_loss is None else val_loss + delta

        result = {
            "schema": 1,
            "group": group,
            "label": label,
            "status": status,
            "overrides": {"hidden_size": width, "optimizer": opt, "parametrization": param,
                          "learning_rate": lr},
            "config_hash": "3f2a",
            "hparams": {"parametrization": param, "optimizer": opt, "hidden_size": width,
                        "learning_rate": lr, "seed": seed, "num_layers": 1, "batch_size": 32,
                        "seq_len": 64, "max_steps": 300, "base_hidden_size": 32},
            "metrics": {"train/loss": loss(0.25), "val/loss": loss(0.0),
                        "val/loss_best": loss(-0.125), "val/loss_floor": 1.6},
            "steps": 300 if diverged_at_step is None else diverged_at_step,
            "tokens_per_second": 350000.0,
            "wall_seconds": 5.5,
            "diverged_at_step": diverged_at_step,
            "world_size": 1,
            "error": error,
            **fields,
        }  # fmt: skip
        path = root / group / label / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result), encoding="utf-8")
        return path

    @staticmethod
    def write_sweep(root: Path) -> None:
        """9 runs. muP/SGD width 16: seed 0 is best at 2^-3 (1.70), seed 1 at 2^-5 (1.60);
        width 32: one seed, best at 2^-4 (1.50). Two diverged (one with a stale low val/loss),
        one failed, and one SP/Adam run."""
        g = "MUP_SGD"
        FakeRuns.write_result(root, g, "a_w16_lr-3_s0", lr=2.0**-3, seed=0, val_loss=1.70)
        FakeRuns.write_result(root, g, "b_w16_lr-4_s0", lr=2.0**-4, seed=0, val_loss=1.80)
        FakeRuns.write_result(
            root,
            g,
            "c_w16_lr-2_s0",
            lr=2.0**-2,
            seed=0,
            status="diverged",
            val_loss=None,
            diverged_at_step=12,
        )
        FakeRuns.write_result(root, g, "d_w16_lr-5_s1", lr=2.0**-5, seed=1, val_loss=1.60)
        FakeRuns.write_result(root, g, "e_w16_lr-3_s1", lr=2.0**-3, seed=1, val_loss=1.90)
        FakeRuns.write_result(
            root,
            g,
            "f_w16_lr-1_s1",
            lr=2.0**-1,
            seed=1,
            status="diverged",
            val_loss=0.10,
            diverged_at_step=3,
        )
        FakeRuns.write_result(root, g, "g_w32_lr-4_s0", width=32, lr=2.0**-4, seed=0, val_loss=1.50)
        FakeRuns.write_result(
            root,
            g,
            "h_w32_lr-3_s0",
            width=32,
            lr=2.0**-3,
            seed=0,
            status="failed",
            val_loss=None,
            error="RuntimeError: out of memory",
        )
        FakeRuns.write_result(
            root, "SP_ADAM", "a_w16_lr-6_s0", param="sp", opt="adam", lr=2.0**-6, val_loss=2.0
        )

    @staticmethod
    def write_curves(
        root: Path, loss, *, param="mup", opt="adam", widths=(16, 64, 256), seeds=(0,)
    ):
        """A run per width, seed and lr of ``GRID`` with val/loss = loss(width, seed, log2 lr);
        a loss of +inf is written as a diverged run."""
        for width in widths:
            for seed in seeds:
                for x in FakeRuns.GRID:
                    value = loss(width, seed, x)
                    diverged = math.isinf(value)
                    FakeRuns.write_result(
                        root, f"{param}_{opt}", f"w{width}_s{seed}_lr{x:g}", param=param, opt=opt,
                        width=width, lr=2.0**x, seed=seed, val_loss=None if diverged else value,
                        status="diverged" if diverged else "completed",
                    )  # fmt: skip

    @staticmethod
    def quadratic(optima: dict[int, float], base: dict[int, float] | None = None):
        """loss(width, seed, x) = base + 0.05 (x - optimum)^2: exact, so its vertex is exact.
        ``base`` defaults to 2 - 0.01 log2(width): wider is better at every lr."""
        return lambda w, s, x: (
            (base or {}).get(w, 2 - 0.01 * math.log2(w)) + 0.05 * (x - optima[w]) ** 2
        )

    # --- studyrep: studies (cli.py tune) and transfers (cli.py transfer), made by hand ---

    SPACE = {
        "learning_rate": {"low": 1.0e-4, "high": 0.3, "log": True},
        "init_std": {"low": 0.25, "high": 4.0},
        "readout_zero_init": {"choices": [True, False]},
    }

    @staticmethod
    def schema2(core_seconds: float | None = 10.0, **fields) -> dict:
        """Schema 2's fields for ``write_result``: one thread, ``core_seconds``."""
        return {"schema": 2, "resumed_from_step": None, "worker_death": None, "threads": 1,
                "core_seconds": core_seconds, "study": None, "trial": None, **fields}  # fmt: skip

    @staticmethod
    def write_study(
        root: Path, name: str, trials: list[tuple], *, proxy_width: int = 32, space=None
    ) -> Path:
        """A study as ``cli.py tune`` leaves it in ``root/name``: study.yaml, an Optuna
        journal holding ``trials`` ((params, value or None for a failed trial,
        core_seconds) each, numbered in order, user attr ``label``) and each trial's
        result.json (a failed trial's as failed)."""
        space = FakeRuns.SPACE if space is None else space
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        proxy = {"hidden_size": proxy_width, "base_hidden_size": 32, "parametrization": "mup"}
        definition = {"study": name, "base_config": "base.yaml", "base_config_text": "model: {}\n",
                      "space": space, "sampler": "random", "seed": 0, "objective": "val/loss",
                      "transfer": True, "proxy": proxy}  # fmt: skip
        (folder / "study.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
        dists = {
            k: optuna.distributions.CategoricalDistribution(d["choices"])
            if "choices" in d
            else optuna.distributions.FloatDistribution(
                d["low"], d["high"], log=d.get("log", False)
            )
            for k, d in space.items()
        }
        backend = optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
        study = optuna.create_study(
            study_name=name, storage=optuna.storages.JournalStorage(backend)
        )
        for number, (params, value, core_seconds) in enumerate(trials):
            state = TrialState.FAIL if value is None else TrialState.COMPLETE
            label = f"trial_{number:04d}"
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=value,
                state=state, user_attrs={"label": label}))  # fmt: skip
            FakeRuns.write_result(
                root, name, label, width=proxy_width, lr=params.get("learning_rate", 0.01),
                status="failed" if value is None else "completed", val_loss=value,
                error="RuntimeError: boom" if value is None else None,
                **FakeRuns.schema2(core_seconds, study=name, trial=number),
            )  # fmt: skip
        return folder

    @staticmethod
    def write_transfer(
        root: Path, group: str, losses: dict[int, list], *, core_seconds: float = 100.0
    ) -> None:
        """A transfer group's runs ``w<width>_seed<seed>``: ``losses`` maps a width to
        each seed's final val/loss (None: that seed diverged)."""
        for width, per_seed in losses.items():
            for seed, loss in enumerate(per_seed):
                FakeRuns.write_result(
                    root, group, f"w{width}_seed{seed}", width=width, seed=seed, val_loss=loss,
                    status="diverged" if loss is None else "completed",
                    diverged_at_step=None if loss is not None else 7,
                    **FakeRuns.schema2(core_seconds),
                )  # fmt: skip


@pytest.fixture(scope="session")
def fake_runs() -> type[FakeRuns]:
    """``FakeRuns``: write result.json files for the report's tests."""
    return FakeRuns


@pytest.fixture(scope="session")
def report_sweep(tmp_path_factory) -> tuple[Path, dict]:
    """``FakeRuns.write_sweep``'s 9 runs and their written report (built once: plotting
    takes a second). Read only."""
    root = tmp_path_factory.mktemp("runs")
    FakeRuns.write_sweep(root)
    return root, write_report(root)


@pytest.fixture(scope="session")
def transfer_sweep(tmp_path_factory) -> tuple[Path, dict]:
    """muP and SP Adam at widths 16, 64, 256, two seeds, each lr of ``FakeRuns.GRID``
    (the transfer case), and the written report. Read only."""
    root = tmp_path_factory.mktemp("transfer")
    FakeRuns.write_curves(root, FakeRuns.quadratic(FakeRuns.MUP_OPTIMA), seeds=(0, 1))
    FakeRuns.write_curves(root, FakeRuns.quadratic(FakeRuns.SP_OPTIMA), param="sp", seeds=(0, 1))
    return root, write_report(root)


# --- core ---


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for any planted code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


@pytest.fixture
def planted_checkpoint(tmp_path):
    """(a .ckpt whose pickle would create ``marker`` if unpickled unsafely, marker)."""
    path, marker = tmp_path / "planted.ckpt", tmp_path / "code_ran"
    torch.save({"state_dict": {}, "global_step": 0, "payload": _Payload(marker)}, path)
    return path, marker


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


def run_cli(
    *args: str, timeout: float | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in a fresh interpreter (environment ``env``, default this
    one's), one thread, output captured."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}
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
