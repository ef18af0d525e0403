"""The sweep runner: experiment groups -> runs -> shards -> results.

Each sub-experiment of the selected groups (see ``experiments``) becomes one run
(``runs``): the base config (``--config``, default ``configs/sweep.yaml``) with its
overrides applied, checked by the same parser as ``cli.py fit``, and written to
``<runs_dir>/<group>/<label>/config.yaml``. The run then trains through the same code
path as ``python cli.py fit --config <that file>`` (``execute``), so that command
reproduces it. Its folder also holds the TensorBoard events, ``last.ckpt`` and
``result.json`` (``results``; ``docs/result_schema.md``), all written atomically.
With ``--workers K`` (default ``auto``: one per core) up to K runs train at once, each in
a worker process that runs them through this same path (``workers``).

Every run of the selection is validated before the first one starts. A shard
(``--job_id I --total_jobs N``, or the SLURM array variables) takes its runs by a
deterministic cost-balanced split. A restarted sweep skips completed runs, resumes a
killed run from its ``last.ckpt``, and refuses a completed run whose config changed
unless ``--force``. SIGTERM or Ctrl-C stops it with one line (exit 143 or 130); the run
it stopped resumes next time.
"""

from __future__ import annotations

import inspect
import os
import typing
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import docstring_parser
import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment

from lstm_lightning import runs as folders
from lstm_lightning import workers as pool
from lstm_lightning.config_checks import check_config_files, one_line
from lstm_lightning.errors import ConfigError
from lstm_lightning.execute import Outcome, parallel, quiet_lightning, say, sequential
from lstm_lightning.experiments import load_definitions, select
from lstm_lightning.files import write_atomic
from lstm_lightning.fit import parser_only
from lstm_lightning.runs import Run

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep.yaml"


@dataclass(frozen=True)
class Selection:
    """The runs a sweep takes, and what it does with those that ran before.

    Args:
        experiments: Groups to run, by name (comma-separated); default: EXPERIMENTS.
        labels: Only these sub-experiment labels (comma-separated).
        definitions: A Python file defining the groups (its EXPERIMENTS, or the groups
            --experiments names); default: lstm_lightning/experiments.py.
        config: The base config every run starts from; default: configs/sweep.yaml.
        runs_dir: Where runs go: <runs_dir>/<group>/<label>/.
        force: Rerun completed runs whose config changed (otherwise refused).
        retry_failed: Rerun failed and diverged runs (otherwise skipped).
    """

    experiments: str | None = None
    labels: str | None = None
    definitions: str | None = None
    config: str | None = None
    runs_dir: str = "runs"
    force: bool = False
    retry_failed: bool = False


@dataclass(frozen=True)
class Placement:
    """Which shard of the runs this process takes, and where each run trains.

    Args:
        job_id: This shard (0-based); default: from SLURM_ARRAY_TASK_ID, else 0.
        total_jobs: Number of shards; default: from SLURM_ARRAY_TASK_COUNT, else 1.
        devices: Devices (processes) per node for every run; DDP when devices x
            num_nodes > 1, which needs srun (cli.py slurm writes the script).
        num_nodes: Nodes for every run.
    """

    job_id: int | None = None
    total_jobs: int | None = None
    devices: int | None = None
    num_nodes: int | None = None


# --- resolution -----------------------------------------------------------------------


def base_config(path: str | None) -> dict:
    """The base config as a dict; ConfigError naming the file if it is not a YAML mapping."""
    path = path or str(DEFAULT_CONFIG)
    check_config_files(["--config", path])
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def resolve_all(runs: list[Run], base: dict, runs_dir: Path, extra: dict) -> None:
    """Resolve every run through the parser of ``cli.py fit``; ConfigError names the run."""
    parser = parser_only()
    for run in runs:
        try:
            folders.resolve(run, parser, base, runs_dir, extra)
        except ConfigError:
            raise
        except Exception as err:  # jsonargparse's ArgumentError or a type error
            raise ConfigError(f"{run.name}: {one_line(err)}") from None


def check_runs_dir(runs_dir: str) -> Path:
    path = Path(runs_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--runs_dir: {runs_dir} is a file; give a folder (new or existing)")
    above = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not above.is_dir() or not os.access(above, os.W_OK):  # else every run would fail
        raise ConfigError(f"--runs_dir: cannot make {runs_dir}: {above} is not a writable folder")
    return path


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


def trainer_placement(devices: int | None, num_nodes: int | None) -> dict:
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


# --- the command -------------------------------------------------------------------------


def prepare(selection: Selection, placement: Placement = Placement()) -> tuple[list[Run], int, int]:
    """Select, expand, validate and shard every run; decide each one's action. Writes
    nothing; raises ConfigError on the first problem."""
    s = selection
    groups = select(load_definitions(s.definitions), s.experiments, s.labels)
    return prepare_groups(groups, base_config(s.config), s, placement)


def prepare_groups(
    groups: list[dict], base: dict, selection: Selection, placement: Placement = Placement()
) -> tuple[list[Run], int, int]:
    """``prepare`` for checked groups given as data over the base config ``base`` (as
    ``cli.py transfer`` builds them); the selection's own groups and config are unread."""
    s = selection
    runs_dir = check_runs_dir(s.runs_dir)
    job, total = choose_shard(placement.job_id, placement.total_jobs)
    runs = [
        Run(g["name"], sub["label"], sub["overrides"], force=s.force, retry_failed=s.retry_failed)
        for g in groups
        for sub in g["subexperiments"]
    ]
    resolve_all(runs, base, runs_dir, trainer_placement(placement.devices, placement.num_nodes))
    for run, shard in zip(runs, assign_shards([r.cost for r in runs], total)):
        run.shard = shard
        folders.plan(run)
    return runs, job, total


TODO = ("run", "resume", "fail")  # the actions that send a run to run_one


def sweep(runs: list[Run], job: int, workers: int | None = 1) -> list[Outcome]:
    """Run this shard's runs, ``workers`` at once (None: auto); what became of each run
    it sent, in the order they finished."""
    mine = [r for r in runs if r.shard == job]
    refused = [r for r in mine if r.action == "refuse"]
    if refused:
        names = ", ".join(r.name for r in refused[:5])
        raise ConfigError(
            f"{len(refused)} completed run(s) changed config ({names}): {refused[0].note}"
        )
    restore_configs(mine)
    for run in mine:
        if run.action == "hold":
            say(f"[sweep] {run.name}: left as it is: {run.note}")
    todo = [r for r in mine if r.action in TODO]
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
    held = sum(r.action == "hold" for r in mine)
    done = len(mine) - len(todo) - held
    say(
        f"[sweep] shard {job}: {len(mine)} runs, {done} already done, "
        f"{f'{held} left as they are, ' if held else ''}{len(todo)} to run{how}"
    )
    if count == 1:
        return sequential(todo, threads)
    return parallel(todo, threads, size, cores)


def restore_configs(runs: list[Run]) -> None:
    """Write again the config.yaml of a run whose result stands but whose file is gone or
    damaged: it is what reproduces the run (its result's hash matched this very text)."""
    for run in runs:
        if run.action == "skip" and folders.read_config(run.dir) is None:
            try:
                write_atomic(run.dir / folders.CONFIG, run.text)
            except OSError as err:
                say(f"[sweep] {run.name}: cannot write its config.yaml again ({err.strerror})")


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


# --- what it prints ------------------------------------------------------------------------


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


def summary_table(outcomes: list[Outcome], runs: list[Run], runs_dir: str) -> str:
    """How the runs it ran ended, each failure with its line; where the results are."""
    ran = [o.result for o in outcomes if o.how == "ran"]
    counts = {s: sum(r["status"] == s for r in ran) for s in ("completed", "diverged", "failed")}
    lines = [f"[sweep] ran {len(ran)}: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    for r in ran:
        if r["status"] != "completed":
            detail = r["error"] or f"at step {r['diverged_at_step']}"
            lines.append(f"  {r['status']:<9} {r['group']}/{r['label']}: {detail}")
    for run in runs:
        if run.action == "hold":
            lines.append(f"  left      {run.name}: {run.note}")
    lines.append(
        f"[sweep] results: {runs_dir}/<group>/<label>/result.json; "
        f"summarize them with: python cli.py report --runs_dir {runs_dir}"
    )
    return "\n".join(lines)


def main(*, dry_run: bool = False, workers: str = "auto", **options: Any) -> int:
    """Run experiment groups as a sweep: one folder, one config and one result per run.

    Args:
        dry_run: Print every run (shard, action, group/label, overrides) and exit.
        workers: Runs at once on this machine, each in its own process: a number, or auto
            (one per core, at most the runs to do; 1 for GPU runs, under SLURM, or for a
            sweep too short to pay for starting workers). A run takes one core, a wide
            one more (its torch threads); 1 runs them in this process.
    """
    requested = pool.parse_workers(workers)
    chosen = Selection(**{f.name: options[f.name] for f in fields(Selection) if f.name in options})
    where = Placement(**{f.name: options[f.name] for f in fields(Placement) if f.name in options})
    runs, job, total = prepare(chosen, where)
    return run_prepared(runs, job, total, requested, chosen.runs_dir, dry_run)


def run_prepared(
    runs: list[Run], job: int, total: int, workers: int | None, runs_dir: str, dry_run: bool
) -> int:
    """What ``main`` does with prepared runs: print them (``dry_run``), or run this shard's
    and say how they ended; the exit status (1 when a run failed or was left as it is)."""
    if dry_run:
        print(dry_run_table(runs, job, total))
        return 0
    outcomes = sweep(runs, job, workers)
    mine = [r for r in runs if r.shard == job]
    say(summary_table(outcomes, mine, runs_dir))
    failed = any(o.how == "ran" and o.result["status"] == "failed" for o in outcomes)
    held = any(o.how == "held" for o in outcomes) or any(r.action == "hold" for r in mine)
    return 1 if failed or held else 0


def _declare_main() -> None:
    """``main``'s flags: the fields of ``Selection`` and ``Placement``, then its own, each
    declared once (``cli.py sweep`` and ``cli.py slurm`` read the signature and docstring)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params, docs = [], []
    for declared in (Selection, Placement):
        types = typing.get_type_hints(declared)
        params += [
            inspect.Parameter(f.name, keyword, default=f.default, annotation=types[f.name])
            for f in fields(declared)
        ]
        docs += docstring_parser.parse(declared.__doc__).params
    hints = typing.get_type_hints(main)
    own = inspect.signature(main).parameters.values()
    params += [p.replace(annotation=hints[p.name]) for p in own if p.kind is keyword]
    docs += docstring_parser.parse(main.__doc__).params
    text = {d.arg_name: " ".join(d.description.split()) for d in docs}
    main.__signature__ = inspect.Signature(params, return_annotation=int)
    summary = main.__doc__.split("\n")[0]
    lines = "".join(f"    {p.name}: {text[p.name]}\n" for p in params)
    main.__doc__ = f"{summary}\n\nArgs:\n{lines}"


_declare_main()
