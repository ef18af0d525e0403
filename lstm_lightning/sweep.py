"""The sweep runner: experiment groups -> runs -> shards -> results.

Each sub-experiment of the selected groups (see ``experiments``) becomes one run: the
base config (``--config``, default ``configs/sweep.yaml``) with its overrides applied,
checked by the same parser as ``cli.py fit``, and written to
``<runs_dir>/<group>/<label>/config.yaml``. The run then trains in this process through
the same code path as ``python cli.py fit --config <that file>``, so that command
reproduces it. Its folder also holds the TensorBoard events, ``last.ckpt`` and
``result.json`` (schema: ``docs/result_schema.md``), all written atomically.
With ``--workers K`` (default ``auto``: one per core) up to K runs train at once, each in
a worker process that runs them through this same path (``workers``).

Every run of the selection is validated before the first one starts. A shard
(``--job_id I --total_jobs N``, or the SLURM array variables) takes its runs by a
deterministic cost-balanced split. A restarted sweep skips completed runs, resumes a
killed run from its ``last.ckpt``, and refuses a completed run whose config changed
unless ``--force``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import logging
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.utilities import rank_zero_only

from lstm_lightning import experiments as definitions
from lstm_lightning import workers as pool
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.files import read_json, write_atomic, write_json_atomic
from lstm_lightning.fit import build_cli, one_line, parser_only
from lstm_lightning.module import LanguageModel, validate_hparams
from lstm_lightning.requeue import Requeued

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep.yaml"

# Flat override keys that are not a model or data argument of the same name.
ALIAS_EXTRA = {
    "seed": "seed_everything",
    "max_steps": "trainer.max_steps",
    "val_check_interval": "trainer.val_check_interval",
    "limit_val_batches": "trainer.limit_val_batches",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "precision": "trainer.precision",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "num_nodes": "trainer.num_nodes",
}


def _aliases() -> dict[str, str]:
    """The one alias table: every model and data argument by its own name, then the
    extras. ``seed`` is the run seed (``seed_everything``); the data's own seed, which
    fixes the synthetic language, is ``data.seed``."""
    table = {}
    for section, cls in (("data", SequenceDataModule), ("model", LanguageModel)):
        table.update({name: f"{section}.{name}" for name in inspect.signature(cls).parameters})
    del table["carry_state"]  # linked from data.batching
    table["vocab_size"] = "data.vocab_size"  # the model's is linked from the data
    table.update(ALIAS_EXTRA)
    return table


ALIASES = _aliases()
# Keys the result records and the report shows, by alias.
RESULT_HPARAMS = (
    "parametrization",
    "optimizer",
    "hidden_size",
    "learning_rate",
    "seed",
    "num_layers",
    "batch_size",
    "seq_len",
    "max_steps",
    "base_hidden_size",
)


@dataclass
class Run:
    """One training run: where it lives and its resolved config."""

    group: str
    label: str
    overrides: dict[str, Any]
    config: Any = None  # the parsed jsonargparse Namespace
    text: str = ""  # the resolved config.yaml
    cost: float = 1.0
    work: float = 1.0  # per training step: tokens x layers x H^2 (its threads follow it)
    shard: int = 0
    action: str = "run"  # run | resume | skip | refuse
    note: str = ""
    dir: Path = field(default_factory=Path)

    @property
    def name(self) -> str:
        return f"{self.group}/{self.label}"

    def hparam(self, alias: str) -> Any:
        return self.config[ALIASES[alias]]


# --- selection ---------------------------------------------------------------------


def load_definitions(path: str | None):
    """The package's definitions, or a user's module loaded from ``path``."""
    if path is None:
        return definitions
    if not os.path.isfile(path):
        raise ConfigError(f"--definitions: {path} does not exist")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a user's file: report any error as one line
        raise ConfigError(
            f"--definitions: {path} failed to import: {type(err).__name__}: {err}"
        ) from None
    return module


def as_groups(value: Any) -> list[dict]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def named_groups(module) -> dict[str, list[dict]]:
    """Every group a module defines, by variable name and by its ``name`` field."""
    found: dict[str, list[dict]] = {}
    for attr, value in vars(module).items():
        groups = as_groups(value)
        if (
            attr.isupper()
            and groups
            and all(isinstance(g, dict) and "subexperiments" in g for g in groups)
        ):
            found[attr] = groups
            if len(groups) == 1:
                found.setdefault(groups[0].get("name"), groups)
    return found


def select(module, experiments: str | None, labels: str | None) -> list[dict]:
    """The groups to run: ``EXPERIMENTS``, or the named ones, cut to ``labels``."""
    if experiments:
        available = named_groups(module)
        groups = []
        for name in experiments.split(","):
            if name not in available:
                close = difflib.get_close_matches(name, available, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(
                    f"--experiments: no group named {name!r}{hint}; "
                    f"available: {', '.join(sorted(available))}"
                )
            groups += available[name]
    else:
        if not hasattr(module, "EXPERIMENTS"):
            raise ConfigError(
                "the definitions define no EXPERIMENTS; set it or pass --experiments NAME"
            )
        groups = as_groups(module.EXPERIMENTS)
    for group in groups:
        _teach(definitions.check_structure, group)
    if labels:
        groups = _teach(definitions.subset_experiments, groups, set(labels.split(",")))
    _teach(definitions.check_unique_labels, groups)
    return groups


def _teach(fn, *args):
    """Run a definitions check; its ValueError becomes the one-line ConfigError."""
    try:
        return fn(*args)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# --- resolution and validation ------------------------------------------------------


def config_parser(base_config: str):
    """The parser of ``cli.py fit`` (built once) and the base config as a dict."""

    with open(base_config, encoding="utf-8") as f:
        base = yaml.safe_load(f) or {}
    return parser_only(), base


def set_path(tree: dict, path: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for path ``a.b.c``, creating levels as needed."""
    *parents, leaf = path.split(".")
    for key in parents:
        node = tree.get(key)
        if not isinstance(node, dict):
            tree[key] = node = {}
        tree = node
    tree[leaf] = value


def resolve_key(key: str, where: str) -> str:
    if key in ALIASES:
        return ALIASES[key]
    if "." in key and key.split(".", 1)[0] in ("model", "data", "trainer", "checkpoint"):
        return key  # a full path: the parser checks it
    close = difflib.get_close_matches(key, list(ALIASES), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"{where}: unknown override key {key!r}{hint}; use a flat key such as "
        "learning_rate or a full path such as model.init_std"
    )


def resolve(run: Run, parser, base: dict, runs_dir: Path, extra: dict | None = None) -> None:
    """Fill ``run.config``, ``run.text`` and ``run.cost``; raise ConfigError naming the
    group, the label and the key on any problem."""
    import copy

    where = f"{run.group}/{run.label}"
    tree = copy.deepcopy(base)
    for key, value in {**run.overrides, **(extra or {})}.items():
        set_path(tree, resolve_key(key, where), value)
    run.dir = runs_dir / run.group / run.label
    # Each run logs into its own folder with a fixed version: no collisions.
    set_path(
        tree,
        "trainer.logger",
        {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {
                "save_dir": str(runs_dir / run.group),
                "name": run.label,
                "version": "",
                "default_hp_metric": False,
            },
        },
    )
    set_path(tree, "checkpoint.dirpath", str(run.dir))
    # Lightning's SIGUSR1 handler saves hpc_ckpt_N.ckpt here before requeueing.
    set_path(tree, "trainer.default_root_dir", str(run.dir))
    try:
        run.config = parser.parse_object(tree)
    except Exception as err:  # jsonargparse's ArgumentError or a type error
        raise ConfigError(f"{where}: {one_line(err)}") from None
    check_values(run.config, where)
    run.text = parser.dump(run.config, skip_none=False)
    hidden, layers = run.config["model.hidden_size"], run.config["model.num_layers"]
    tokens = run.config["data.batch_size"] * run.config["data.seq_len"]
    steps = run.config["trainer.max_steps"]
    steps = steps if steps and steps > 0 else 1000
    # LSTM cost per token grows as layers x H^2; the constant stands for fixed costs.
    run.work = float(tokens * layers * hidden * hidden)
    run.cost = float(steps * (run.work + tokens * 4096))


def check_values(config, where: str) -> None:
    """The checks the classes make at construction, without building a model."""
    model = AttributeDict(config["model"].as_dict())
    model["vocab_size"] = 1  # linked from the data at instantiation
    try:
        validate_hparams(model)
        SequenceDataModule(**config["data"].as_dict())  # checks arguments, loads nothing
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- sharding ------------------------------------------------------------------------


def assign_shards(costs: list[float], total_jobs: int) -> list[int]:
    """Shard of each run: longest first onto the least-loaded shard (ties: lowest index).

    Deterministic, every run in exactly one shard, loads balanced by estimated cost.
    """
    loads = [0.0] * total_jobs
    shards = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(total_jobs), key=lambda s: (loads[s], s))
        shards[i] = target
        loads[target] += costs[i]
    return shards


def shard_from_env(env: dict[str, str]) -> tuple[int, int] | None:
    """(job_id, total_jobs) from a SLURM job array's variables, or None outside one."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    task = int(env["SLURM_ARRAY_TASK_ID"])
    low = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    count = int(
        env.get("SLURM_ARRAY_TASK_COUNT", int(env.get("SLURM_ARRAY_TASK_MAX", task)) - low + 1)
    )
    return task - low, count


def choose_shard(job_id: int | None, total_jobs: int | None, env=os.environ) -> tuple[int, int]:
    """The flags where given; each missing one from the SLURM array, else shard 0 of 1."""
    array = shard_from_env(env)
    if job_id is None:
        job_id = array[0] if array else 0
    if total_jobs is None:
        total_jobs = array[1] if array else 1
    if total_jobs < 1:
        raise ConfigError(f"--total_jobs must be at least 1, got {total_jobs}")
    if not 0 <= job_id < total_jobs:
        raise ConfigError(
            f"--job_id must be in [0, {total_jobs - 1}] for --total_jobs {total_jobs}, got {job_id}"
        )
    return job_id, total_jobs


# --- state: skip, resume, refuse -------------------------------------------------------


RESULT = "result.json"
CHECKPOINT = "last.ckpt"


def checkpoints(run_dir: Path) -> list[Path]:
    """What a killed or requeued run left: ``last.ckpt`` (periodic) and Lightning's
    ``hpc_ckpt_N.ckpt`` (written on SIGUSR1 before a SLURM requeue)."""
    return [p for p in [run_dir / CHECKPOINT, *run_dir.glob("hpc_ckpt_*.ckpt")] if p.exists()]


def newest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint furthest into training, and its global step."""
    # mmap: read the step without loading every tensor of a large model.
    steps = [
        (torch.load(p, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0), p)
        for p in checkpoints(run_dir)
    ]
    if not steps:
        return None
    step, path = max(steps, key=lambda sp: (sp[0], sp[1].name))
    return path, step


def plan(run: Run, force: bool, retry_failed: bool) -> None:
    """Decide ``run.action`` from what its folder already holds."""
    result = read_json(run.dir / RESULT)
    changed = result is not None and result.get("config_hash") != config_hash(run.text)
    written = run.dir / "config.yaml"
    partial_changed = (
        result is None
        and checkpoints(run.dir)
        and written.exists()
        and written.read_text(encoding="utf-8") != run.text
    )
    if force and (changed or partial_changed):
        run.action, run.note = "run", "config changed: --force reruns it"
    elif changed or partial_changed:
        run.action = "refuse"
        run.note = (
            "its config changed since it ran; rerun it with --force, or give the "
            "changed run a new label"
        )
    elif result is None:
        resume = bool(checkpoints(run.dir))
        run.action, run.note = ("resume", "from its checkpoint") if resume else ("run", "")
    elif result["status"] == "completed":
        run.action, run.note = "skip", "completed"
    elif retry_failed and died(result) and checkpoints(run.dir):
        run.action, run.note = "resume", "its worker died: from its checkpoint"
    elif retry_failed:
        run.action, run.note = "run", f"retrying a {result['status']} run"
    else:
        run.action, run.note = "skip", f"{result['status']} (--retry_failed reruns it)"


def clear(run_dir: Path) -> None:
    """Remove a previous attempt's outputs, so a rerun does not mix with them."""
    for name in (RESULT, CHECKPOINT, "traceback.txt", "hparams.yaml"):
        (run_dir / name).unlink(missing_ok=True)
    for stale in [*run_dir.glob("events.out.tfevents.*"), *run_dir.glob("hpc_ckpt_*.ckpt")]:
        stale.unlink()


# --- execution ---------------------------------------------------------------------------


def is_writer() -> bool:
    """Global rank 0 (Lightning's reading of RANK / SLURM_PROCID) writes; others only train."""
    return rank_zero_only.rank == 0


def execute(run: Run) -> dict | None:
    """Train one run in this process as ``cli.py fit --config <run>/config.yaml`` would;
    None when it stopped for a SLURM requeue.

    Every rank parses the same resolved text (not the file, which rank 0 may still be
    writing); a resumed run starts from its newest checkpoint.
    """
    if is_writer():
        if run.action == "run":
            clear(run.dir)
        write_atomic(run.dir / "config.yaml", run.text)
    args = ["fit", "--config", run.text]
    resumed_from = None
    newest = newest_checkpoint(run.dir) if run.action == "resume" else None
    if newest is not None:
        path, resumed_from = newest
        args += ["--ckpt_path", str(path)]
    start = time.perf_counter()
    with warnings.catch_warnings():  # args beside sys.argv is intended here
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        try:
            cli = build_cli(args, save_config=False)
        except Requeued:
            return None  # SLURM requeues this job; it resumes the run from hpc_ckpt_N.ckpt
    trainer, model = cli.trainer, cli.model
    # The run is done: its hpc checkpoints are spent, and Lightning would load one
    # instead of the final weights in the validate below (it picks them up under SLURM).
    if is_writer():
        for stale in run.dir.glob("hpc_ckpt_*.ckpt"):
            stale.unlink()
    trainer.strategy.barrier()
    if model.diverged_at_step is None and model.last_val_step != trainer.global_step:
        trainer.validate(model, datamodule=cli.datamodule, verbose=False)  # score the end
    wall = time.perf_counter() - start
    steps_run = trainer.global_step - (resumed_from or 0)
    tokens = steps_run * run.config["data.batch_size"] * run.config["data.seq_len"]
    return result_record(run, cli, wall, tokens / wall if wall > 0 else None, resumed_from)


def result_record(run: Run, cli, wall: float, tokens_per_second, resumed_from) -> dict:
    metrics = cli.trainer.callback_metrics
    model = cli.model

    def metric(name):
        value = metrics.get(name)
        return None if value is None else float(value)

    return {
        **identity(run),
        "status": "diverged" if model.diverged_at_step is not None else "completed",
        "metrics": {
            "train/loss": model.last_train_loss,
            "val/loss": metric("val/loss"),
            "val/loss_best": metric("val/loss_best"),
            "val/loss_floor": metric("val/loss_floor"),
        },
        "steps": cli.trainer.global_step,
        "tokens_per_second": tokens_per_second,
        "wall_seconds": wall,
        "diverged_at_step": model.diverged_at_step,
        "resumed_from_step": resumed_from,
        "world_size": cli.trainer.world_size,
        "error": None,
    }


def identity(run: Run) -> dict:
    return {
        "schema": 1,
        "group": run.group,
        "label": run.label,
        "overrides": run.overrides,
        "config_hash": config_hash(run.text),
        "hparams": {alias: run.hparam(alias) for alias in RESULT_HPARAMS},
    }


def failure_record(run: Run, err: BaseException, wall: float) -> dict:
    rank = rank_zero_only.rank
    write_atomic(
        run.dir / ("traceback.txt" if rank == 0 else f"traceback.rank{rank}.txt"),
        traceback.format_exc(),
    )
    return failed(run, f"{type(err).__name__}: {err}".splitlines()[0], wall)


def failed(run: Run, summary: str, wall: float) -> dict:
    return {
        **identity(run),
        "status": "failed",
        "metrics": {
            "train/loss": None,
            "val/loss": None,
            "val/loss_best": None,
            "val/loss_floor": None,
        },
        "steps": None,
        "tokens_per_second": None,
        "wall_seconds": wall,
        "diverged_at_step": None,
        "resumed_from_step": None,
        "world_size": None,
        "error": summary,
    }


class GlobalState:
    """Undo what one run leaves behind: environment variables, a process group, threads."""

    def __enter__(self):
        self.env = dict(os.environ)
        self.threads = torch.get_num_threads()
        return self

    def __exit__(self, *exc):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) - set(self.env):
            del os.environ[key]
        os.environ.update(self.env)
        torch.set_num_threads(self.threads)
        return False


def run_one(run: Run, threads: int | None = None) -> dict | None:
    """Execute a run on ``threads`` torch threads (None: as they are), isolating failures:
    any exception becomes a ``failed`` result. None when the run stopped for a SLURM
    requeue: no result is recorded."""
    start = time.perf_counter()
    with GlobalState():
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            result = execute(run)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - a run's failure must not stop the sweep
            result = failure_record(run, err, time.perf_counter() - start)
    if result is None:
        return None
    if is_writer():
        write_json_atomic(run.dir / RESULT, result)
    return result


def run_in_worker(run: Run, threads: int) -> dict | None:
    """What a worker process does with each run it is sent (see ``workers``)."""
    quiet_lightning()
    return run_one(run, threads)


def record_death(run: Run, reason: str, started: float) -> dict:
    """The result of a run whose worker died under it: ``failed``, with the reason; its
    ``last.ckpt`` stays, so ``--retry_failed`` resumes it. A result the worker wrote
    before dying (after ``started``, a ``time.time()``) stands."""
    path = run.dir / RESULT
    if path.exists() and path.stat().st_mtime >= started:
        return read_json(path)
    result = failed(run, f"{reason}; --retry_failed resumes it", time.time() - started)
    write_json_atomic(path, result)
    return result


def died(result: dict) -> bool:
    """Whether a failed result is a worker's death (not the run's own error)."""
    return result["status"] == "failed" and (result.get("error") or "").startswith(pool.DIED)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the command -------------------------------------------------------------------------


def placement(devices: int | None, num_nodes: int | None) -> dict:
    """Trainer keys every run gets from ``--devices``/``--num_nodes``: DDP when the product
    is above 1, with SLURMEnvironment deciding ranks (so the sweep must run under srun)."""
    extra = {}
    if devices is not None:
        extra["trainer.devices"] = devices
    if num_nodes is not None:
        extra["trainer.num_nodes"] = num_nodes
    if (devices or 1) * (num_nodes or 1) > 1:
        if not under_slurm():
            raise ConfigError(
                "--devices x --num_nodes > 1 needs one process per device, started by "
                "srun: submit with python cli.py slurm (or run under srun); for one DDP "
                "run on this machine use python cli.py fit --trainer.devices N"
            )
        extra["trainer.strategy"] = "ddp"
    return extra


def prepare(
    experiments: str | None = None,
    labels: str | None = None,
    definitions_path: str | None = None,
    config: str | None = None,
    runs_dir: str = "runs",
    job_id: int | None = None,
    total_jobs: int | None = None,
    force: bool = False,
    retry_failed: bool = False,
    devices: int | None = None,
    num_nodes: int | None = None,
) -> tuple[list[Run], int, int]:
    """Select, expand, validate and shard every run; decide each one's action. Writes
    nothing; raises ConfigError on the first problem."""
    module = load_definitions(definitions_path)
    groups = select(module, experiments, labels)
    base_config = config or str(DEFAULT_CONFIG)
    if not os.path.isfile(base_config):
        raise ConfigError(f"--config: {base_config} does not exist")
    parser, base = config_parser(base_config)
    job, total = choose_shard(job_id, total_jobs)
    runs = [Run(g["name"], s["label"], s["overrides"]) for g in groups for s in g["subexperiments"]]
    extra = placement(devices, num_nodes)
    for run in runs:
        resolve(run, parser, base, Path(runs_dir), extra)
    for run, shard in zip(runs, assign_shards([r.cost for r in runs], total)):
        run.shard = shard
        plan(run, force, retry_failed)
    return runs, job, total


def sweep(runs: list[Run], job: int, workers: int | None = 1) -> list[dict]:
    """Run this shard's runs, ``workers`` at once (None: auto); return the results of
    those it ran, in the order they finished."""
    mine = [r for r in runs if r.shard == job]
    refused = [r for r in mine if r.action == "refuse"]
    if refused:
        names = ", ".join(r.name for r in refused[:5])
        raise ConfigError(
            f"{len(refused)} completed run(s) changed config ({names}): {refused[0].note}"
        )
    todo = [r for r in mine if r.action in ("run", "resume")]
    slurm = under_slurm()
    cores = pool.available_cores()
    count = pool.resolve_workers(workers, [r.cost for r in todo], cores, slurm, on_cpu(todo))
    # Threads are the run's own choice, the same in every mode, so a run's result does not
    # depend on --workers. Under SLURM they stay as srun and Lightning set them.
    cap = pool.thread_cap(cores)
    threads = [None if slurm else pool.threads_for(r.work, cap) for r in todo]
    size = min(count, cores, len(todo))  # no more processes than can ever run at once
    quiet_lightning()
    how = f"; {size} worker process{'es' * (size > 1)} on {cores} cores" if count > 1 else ""
    say(
        f"[sweep] shard {job}: {len(mine)} runs, {len(mine) - len(todo)} already done, "
        f"{len(todo)} to run{how}"
    )
    if count == 1:
        return sequential(todo, threads)
    return parallel(todo, threads, size, cores)


def sequential(todo: list[Run], threads: list[int | None]) -> list[dict]:
    """One run after another, in this process."""
    results, line = [], Progress(todo)
    for run, t in zip(todo, threads):
        line.started(run)
        result = run_one(run, t)
        if result is None:
            say(f"[sweep] requeued during {run.name}: stopping; the requeued job resumes it")
            break
        results.append(result)
        line.finished(run)
    return results


def parallel(todo: list[Run], threads: list[int], size: int, cores: int) -> list[dict]:
    """Longest first, in ``size`` worker processes, the threads in use within ``cores``.
    Ctrl-C or SIGTERM stops the workers; their runs resume from last.ckpt next time."""
    order = sorted(range(len(todo)), key=lambda i: (-todo[i].cost, i))
    todo, threads = [todo[i] for i in order], [threads[i] for i in order]
    results, line, started = [], Progress(todo), {}
    try:
        with pool.Pool(run_in_worker, size) as workers:
            for event in workers.run(todo, threads, cores):
                run, t = todo[event.index], threads[event.index]
                if event.kind == "start":
                    started[event.index] = time.time()
                    line.started(run, f", pid {event.detail}, {t} thread{'s' * (t > 1)}")
                    continue
                result = event.detail
                if event.kind == "died":
                    say(f"[sweep] {run.name}: {result}; recorded as failed, a new worker starts")
                    result = record_death(run, result, started[event.index])
                if result is not None:
                    results.append(result)
                line.finished(run)
    except KeyboardInterrupt:
        say("[sweep] interrupted: workers stopped; their runs resume from last.ckpt next time")
        raise SystemExit(130) from None
    except pool.WorkerStartError as err:
        say(f"[sweep] {err}")
        raise SystemExit(1) from None
    return results


class Progress:
    """The line each run's start prints: k of N, and the ETA at the pace of the runs done."""

    def __init__(self, todo: list[Run]):
        self.count, self.left = len(todo), sum(r.cost for r in todo)
        self.k, self.done, self.start = 0, 0.0, time.perf_counter()

    def started(self, run: Run, how: str = "") -> None:
        pace = (time.perf_counter() - self.start) / self.done if self.done else None
        eta = f", ETA {format_seconds(pace * self.left)}" if pace is not None else ""
        self.k += 1
        say(f"[sweep] run {self.k}/{self.count} {run.name} ({run.action}{how}{eta})")

    def finished(self, run: Run) -> None:
        self.done += run.cost
        self.left -= run.cost


def on_cpu(runs: list[Run]) -> bool:
    """Whether every run trains on the CPU (``auto`` finding no GPU counts)."""
    accelerators = {str(r.config["trainer.accelerator"]) for r in runs}
    if "auto" in accelerators:
        accelerators.discard("auto")
        gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
        accelerators.add("gpu" if gpu else "cpu")
    return accelerators <= {"cpu"}


def under_slurm() -> bool:
    """Whether this process runs in a SLURM job step (srun): Lightning's own test, without
    its hint to use srun."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SLURMEnvironment.detect()


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def quiet_lightning() -> None:
    """Lightning's per-run banners (GPU available, seed set, ...) would bury the progress."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def dry_run_table(runs: list[Run], job: int, total: int) -> str:
    lines = [
        f"{len(runs)} runs in the selection; shard {job} of {total} (0-based)",
        "shard  action  group/label  overrides",
    ]
    for run in runs:
        overrides = " ".join(f"{k}={v}" for k, v in run.overrides.items())
        mark = "*" if run.shard == job else " "
        note = f"  [{run.note}]" if run.note else ""
        lines.append(f"{mark}{run.shard:<5} {run.action:<7} {run.name}  {overrides}{note}")
    return "\n".join(lines)


def summary_table(results: list[dict]) -> str:
    counts = {
        s: sum(r["status"] == s for r in results) for s in ("completed", "diverged", "failed")
    }
    lines = [f"[sweep] ran {len(results)}: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    for r in results:
        if r["status"] != "completed":
            detail = r["error"] or f"at step {r['diverged_at_step']}"
            lines.append(f"  {r['status']:<9} {r['group']}/{r['label']}: {detail}")
    return "\n".join(lines)


def main(
    *,
    experiments: str | None = None,
    labels: str | None = None,
    definitions: str | None = None,
    config: str | None = None,
    runs_dir: str = "runs",
    job_id: int | None = None,
    total_jobs: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    devices: int | None = None,
    num_nodes: int | None = None,
    workers: str = "auto",
) -> int:
    """Run experiment groups as a sweep: one folder, one config and one result per run.

    Args:
        experiments: Groups to run, by name (comma-separated); default: EXPERIMENTS.
        labels: Only these sub-experiment labels (comma-separated).
        definitions: A Python file defining the groups (its EXPERIMENTS, or the groups
            --experiments names); default: lstm_lightning/experiments.py.
        config: The base config every run starts from; default: configs/sweep.yaml.
        runs_dir: Where runs go: <runs_dir>/<group>/<label>/.
        job_id: This shard (0-based); default: from SLURM_ARRAY_TASK_ID, else 0.
        total_jobs: Number of shards; default: from SLURM_ARRAY_TASK_COUNT, else 1.
        dry_run: Print every run (shard, action, group/label, overrides) and exit.
        force: Rerun completed runs whose config changed (otherwise refused).
        retry_failed: Rerun failed and diverged runs (otherwise skipped).
        devices: Devices (processes) per node for every run; DDP when devices x
            num_nodes > 1, which needs srun (cli.py slurm writes the script).
        num_nodes: Nodes for every run.
        workers: Runs at once on this machine, each in its own process: a number, or auto
            (one per core, at most the runs to do; 1 for GPU runs, under SLURM, or for a
            sweep too short to pay for starting workers). A run takes one core, a wide
            one more (its torch threads); 1 runs them in this process.
    """
    requested = pool.parse_workers(workers)
    runs, job, total = prepare(
        experiments,
        labels,
        definitions,
        config,
        runs_dir,
        job_id,
        total_jobs,
        force,
        retry_failed,
        devices,
        num_nodes,
    )
    if dry_run:
        print(dry_run_table(runs, job, total))
        return 0
    results = sweep(runs, job, requested)
    print(summary_table(results), file=sys.stderr)
    return 1 if any(r["status"] == "failed" for r in results) else 0
