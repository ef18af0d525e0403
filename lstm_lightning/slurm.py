"""A sweep as a SLURM job array: ``python cli.py slurm ... --total_jobs N [--submit]``.

The contract. Given the sweep's selection (``--experiments --labels --definitions --config
--runs_dir``) and N, ``main`` validates every run of the selection (``sweep.prepare``: a
bad label, key or value is the sweep's one-line ConfigError), and what would otherwise
fail only after queueing (a global batch that does not divide among the processes, GPUs
asked for with ``trainer.accelerator: cpu``); on any error nothing is written. It then
writes ``<runs_dir>/slurm/<experiments>[_<labels>]_<N>jobs.sbatch`` atomically (derived
data, rewritten on every call; sbatch keeps its own copy of a submitted script) and
prints its path. Task k of the array ``--array=0-(N-1)[%K]`` runs shard k of the sweep.
With ``--submit`` it runs ``sbatch <script>`` and prints the job id; a failed sbatch is
one ``error:`` line with sbatch's own words, and exit status 1. Every option is declared
once, in ``OPTIONS``: the flags of ``cli.py slurm`` (``main``'s signature and docstring)
and the set of valid keys derive from it.

The pitfalls the script is built around:

- **srun is required for DDP.** The batch script runs once, on the first node; ``srun``
  starts the ``--ntasks-per-node x --nodes`` processes that Lightning's SLURMEnvironment
  turns into ranks (from ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``).
- **--ntasks-per-node must equal the devices per node** (and ``--nodes`` the number of
  nodes): Lightning checks both against ``trainer.devices`` and ``trainer.num_nodes`` and
  refuses a mismatch, so one value (``--devices_per_node``) sets both.
- **SIGUSR1 is the requeue signal.** ``--signal=SIGUSR1@90`` makes SLURM send it 90 s
  before the time limit, to the job's srun steps (not to the batch shell: verified on the
  local cluster, ``tests/test_slurm_cluster.py``), which is a second reason for srun.
  The run then saves a checkpoint between two steps and runs ``scontrol requeue``
  (``requeue.py``); ``--requeue`` allows it, and the requeued task's sweep skips finished
  runs and resumes the interrupted one.
- **No shard flags on the sweep line.** The sweep reads its shard and the shard count
  from ``SLURM_ARRAY_TASK_ID``/``_COUNT``/``_MIN``, so one script serves any array
  size ``sbatch --array`` is given.
- **MASTER_PORT** is derived by Lightning from the last 4 digits of ``SLURM_JOB_ID``, and
  each array task has its own job id, so two tasks sharing a node do not collide; the
  script parses no SLURM variable itself.
- **Quoting.** Every path, label and value on a shell line goes through ``shlex.quote``
  (except ``--setup``, which is shell code by intent).
  ``#SBATCH`` lines are read by sbatch's own parser, not the shell: a value with a space
  or ``'`` is double-quoted for it, ``%`` in ``--runs_dir`` becomes ``%%`` in the log
  pattern, and what that parser would mangle (a newline or control character, ``"``,
  ``\\``, ``#``, the words hetjob/packjob) is refused with a ConfigError naming the
  option. Any value with a newline is refused: every line stays one line.
- **Relative paths** are made absolute here, since the job runs in ``--workdir``.

Modules and virtualenvs: the job runs ``--python`` (default: the interpreter running this
command) from ``--workdir`` (default: this checkout). Add ``--setup "source
.venv/bin/activate"`` (or ``module load ...``) for a line run before srun, under
``set -euo pipefail``; editing the script by hand is lost on the next call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docstring_parser

from lstm_lightning import sweep
from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.experiments import SAFE_CHARS, SAFE_NAME
from lstm_lightning.files import write_atomic

PROJECT_DIR = Path(__file__).resolve().parent.parent  # where cli.py is
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Option:
    """One flag of ``cli.py slurm``: its type, default and help line."""

    name: str
    type: Any
    default: Any
    help: str
    minimum: int | None = None  # ints only


def _selection() -> tuple[Option, ...]:
    """The sweep's selection flags, passed on to ``cli.py sweep`` in the job (paths made
    absolute): declared once, by ``sweep.Selection``, read from ``sweep.main``'s signature
    and docstring."""
    params = inspect.signature(sweep.main).parameters
    docs = {d.arg_name: d.description for d in docstring_parser.parse(sweep.main.__doc__).params}
    return tuple(
        Option(f.name, params[f.name].annotation, params[f.name].default, docs[f.name])
        for f in dataclasses.fields(sweep.Selection)
    )


SELECTION = _selection()
# fmt: off
# The job: its #SBATCH lines and the shell lines around srun.
JOB = (
    Option("total_jobs", int, REQUIRED, minimum=1,
           help="Array tasks N, one sweep shard each: --array=0-(N-1)."),
    Option("array_parallelism", int | None, None, minimum=1,
           help="Run at most K tasks at once (--array=...%K); default: no limit."),
    Option("nodes", int, 1, minimum=1,
           help="Nodes per task (trainer.num_nodes)."),
    Option("gpus_per_node", int, 0, minimum=0,
           help="GPUs per node, --gres=gpu:G (none if 0); needs trainer.accelerator gpu or auto."),
    Option("devices_per_node", int | None, None, minimum=1,
           help="Processes per node: --ntasks-per-node and trainer.devices (DDP when devices x "
                "nodes > 1, over gloo on CPU); default: gpus_per_node if > 0, else 1."),
    # 1: data loads in the training process (data.num_workers 0) and a narrow LSTM runs
    # fastest on one thread (README, Threads); a smaller request also schedules sooner.
    Option("cpus_per_task", int, 1, minimum=1,
           help="CPU cores per process, and OMP_NUM_THREADS; raise it with data.num_workers."),
    Option("time", str, "04:00:00",
           "Time limit per task, [D-]HH:MM:SS; SIGUSR1 comes 90 s before it."),
    Option("mem", str | None, None,
           "Memory per node, e.g. 16G; default: the partition's."),
    Option("partition", str | None, None,
           "Partition; default: the cluster's."),
    Option("account", str | None, None,
           "Account to charge."),
    Option("qos", str | None, None,
           "Quality of service."),
    Option("job_name", str, "lstm_lightning",
           "Job name, and the start of each task's log file name."),
    Option("workdir", str | None, None,
           "Directory holding cli.py, where the job runs; default: this checkout."),
    Option("python", str | None, None,
           "The Python that runs cli.py in the job; default: the one running this command."),
    Option("setup", str | None, None,
           "One shell line run before srun, verbatim, e.g. 'source .venv/bin/activate'."),
    Option("submit", bool, False,
           "Submit the script with sbatch and print the job id."),
)
# fmt: on
OPTIONS = SELECTION + JOB
VALID = tuple(o.name for o in OPTIONS)

# Lightning ignores SLURM under these job names (no ranks from srun, no auto-requeue).
INTERACTIVE_JOB_NAMES = ("bash", "interactive")
ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")  # a newline or control character
# What an #SBATCH line cannot carry: sbatch reads it with its own parser, not the shell's.
SBATCH_REFUSED = (
    (ONE_LINE, "a newline or control character"),
    (re.compile(r'["\\#]'), 'a " \\ or # (to sbatch: a quote, an escape, a comment)'),
    (re.compile(r"(?i)hetjob|packjob"), "hetjob or packjob (sbatch blanks these words out)"),
)
NEEDS_QUOTES = re.compile(r"[\s']")  # sbatch splits at spaces; ' opens a quote there
SUBMITTED = re.compile(r"Submitted batch job (\d+)")
LOG_NAME = "%x_%A_%a.out"  # job name, array job id, task id: one file per task


# --- options --------------------------------------------------------------------------


def resolve_options(given: dict[str, Any]) -> dict[str, Any]:
    """Every option, defaults filled in, checked, paths absolute; pure (reads no file).

    A ConfigError names the flag: an unknown key lists the valid ones.
    """
    unknown = sorted(set(given) - set(VALID))
    if unknown:
        hint = did_you_mean(unknown[0], VALID)
        raise ConfigError(f"unknown option {unknown[0]!r}{hint}; valid: {', '.join(VALID)}")
    options = {o.name: given.get(o.name, o.default) for o in OPTIONS}
    for option in OPTIONS:
        check_value(option, options[option.name])
    return derive(options)


def check_value(option: Option, value: Any) -> None:
    flag = f"--{option.name}"
    if value is REQUIRED:
        raise ConfigError(f"{flag} is required")
    if not isinstance(value, option.type):
        kind = getattr(option.type, "__name__", str(option.type))
        raise ConfigError(f"{flag} must be {kind}, got {value!r}")
    if value == "":
        raise ConfigError(f"{flag} is empty; give a value or leave the flag out")
    if isinstance(value, str) and ONE_LINE.search(value):
        raise ConfigError(
            f"{flag}: {value!r} holds a newline or control character; give it on one line"
        )
    if option.minimum is not None and value is not None and value < option.minimum:
        raise ConfigError(f"{flag} must be at least {option.minimum}, got {value}")


def derive(options: dict[str, Any]) -> dict[str, Any]:
    """The defaults that depend on other options or on this process."""
    o = dict(options)
    if o["devices_per_node"] is None:
        o["devices_per_node"] = o["gpus_per_node"] or 1  # a process per GPU; 1 on CPU
    if 0 < o["gpus_per_node"] < o["devices_per_node"]:
        raise ConfigError(
            f"--devices_per_node {o['devices_per_node']} exceeds --gpus_per_node "
            f"{o['gpus_per_node']}: each process needs its own GPU"
        )
    if not SAFE_NAME.fullmatch(o["job_name"]) or o["job_name"] in INTERACTIVE_JOB_NAMES:
        raise ConfigError(
            f"--job_name {o['job_name']!r}: it names the log files, so use only {SAFE_CHARS}; "
            f"and not {' or '.join(INTERACTIVE_JOB_NAMES)}, under which Lightning ignores SLURM"
        )
    o["python"] = o["python"] or sys.executable
    o["workdir"] = os.path.abspath(o["workdir"] or PROJECT_DIR)
    for name in ("runs_dir", "definitions", "config"):  # the job runs elsewhere: absolute
        o[name] = o[name] and os.path.abspath(o[name])
    return o


# --- the script ---------------------------------------------------------------------------


def sbatch_rows(o: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(option it comes from, #SBATCH flag, value) in script order. Value None: no line;
    "": a bare flag."""
    array = f"0-{o['total_jobs'] - 1}"
    parallelism = o["array_parallelism"]
    gpus = o["gpus_per_node"]
    return [
        ("job_name", "job-name", o["job_name"]),
        ("total_jobs", "array", f"{array}%{parallelism}" if parallelism else array),
        ("nodes", "nodes", o["nodes"]),
        ("devices_per_node", "ntasks-per-node", o["devices_per_node"]),
        ("cpus_per_task", "cpus-per-task", o["cpus_per_task"]),
        ("gpus_per_node", "gres", f"gpu:{gpus}" if gpus else None),
        ("mem", "mem", o["mem"]),
        ("time", "time", o["time"]),
        ("partition", "partition", o["partition"]),
        ("account", "account", o["account"]),
        ("qos", "qos", o["qos"]),
        # stderr joins stdout in it; '%' in a directory name must be '%%' to SLURM.
        ("runs_dir", "output", log_path(o)),
        # A requeued task appends to its log instead of overwriting the first attempt's.
        ("", "open-mode", "append"),
        ("", "signal", "SIGUSR1@90"),
        ("", "requeue", ""),
    ]


def log_dir(o: dict[str, Any]) -> str:
    return os.path.join(o["runs_dir"], "slurm")


def log_path(o: dict[str, Any]) -> str:
    """The task log pattern; '%' in the directory is literal ('%%' to SLURM)."""
    return f"{log_dir(o).replace('%', '%%')}/{LOG_NAME}"


def sbatch_line(option: str, flag: str, value: Any) -> str:
    text = str(value)
    for pattern, what in SBATCH_REFUSED:
        if pattern.search(text):
            raise ConfigError(f"--{option}: {text!r} holds {what}, which an #SBATCH line cannot")
    if NEEDS_QUOTES.search(text):
        text = f'"{text}"'  # sbatch's parser reads a double-quoted value as one
    return f"#SBATCH --{flag}={text}" if text else f"#SBATCH --{flag}"


def sweep_argv(o: dict[str, Any]) -> list[str]:
    """The job's sweep command; no --job_id/--total_jobs: the sweep reads the array's."""
    argv = [o["python"], "cli.py", "sweep"]
    for option in SELECTION:
        value = o[option.name]
        if option.type is bool:
            argv += [f"--{option.name}"] if value else []
        elif value is not None:
            argv += [f"--{option.name}", str(value)]
    return argv + ["--devices", str(o["devices_per_node"]), "--num_nodes", str(o["nodes"])]


EXPLANATION = """\
#
# Written by `python cli.py slurm`, and rewritten by it: change the command, not this file.
# Task k of the array runs shard k of the sweep, read from SLURM_ARRAY_TASK_ID/_COUNT/_MIN.
# srun starts --ntasks-per-node processes on each node: the DDP ranks, which Lightning
# requires to equal trainer.devices (--devices) and --nodes trainer.num_nodes.
# SIGUSR1 reaches srun steps (not this shell) 90 s before the time limit: the run then
# saves a checkpoint between two steps and requeues the task, whose sweep resumes it.
# MASTER_PORT: Lightning derives it from the last 4 digits of SLURM_JOB_ID, and each
# array task has its own job id, so tasks sharing a node do not collide."""


def sbatch_script(o: dict[str, Any]) -> str:
    """The script for resolved options (``resolve_options``); pure."""
    return job_script(o, EXPLANATION, sweep_argv(o))


def job_script(o: dict[str, Any], explanation: str, argv: list[str]) -> str:
    """An array job's script: the #SBATCH lines of ``o``, ``explanation``, then every task
    running ``srun argv`` (shell-quoted) from ``o["workdir"]`` after ``o["setup"]``."""
    header = ["#!/bin/bash"]
    header += [sbatch_line(*row) for row in sbatch_rows(o) if row[2] is not None]
    body = [
        "set -euo pipefail",
        f"cd {shlex.quote(o['workdir'])}",
        *([o["setup"]] if o["setup"] else []),
        # torch would otherwise start a thread per core of the node where tasks are not
        # bound to their cores.
        f"export OMP_NUM_THREADS={o['cpus_per_task']}",
        f"srun {shlex.join(argv)}",
    ]
    return "\n".join([*header, explanation, *body]) + "\n"


def script_path(o: dict[str, Any]) -> Path:
    """``<runs_dir>/slurm/<experiments>[_<labels>]_<N>jobs.sbatch``, the lists as given."""
    stem = "_".join(s for s in (o["experiments"] or "EXPERIMENTS", o["labels"]) if s)
    if len(stem) > 100:  # file names stop at 255 bytes: a readable start and a hash
        stem = f"{stem[:90]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return Path(log_dir(o)) / f"{stem}_{o['total_jobs']}jobs.sbatch"


# --- checks that need the runs, and submission ------------------------------------------


def check_runs(runs: list[sweep.Run], o: dict[str, Any]) -> None:
    """What would otherwise fail only on the cluster, after waiting in the queue."""
    stuck = [r for r in runs if r.action in ("refuse", "hold")]
    if stuck:
        more = f" (and {len(stuck) - 1} more run(s))" if len(stuck) > 1 else ""
        raise ConfigError(f"{stuck[0].name}: {stuck[0].note}{more}")
    world = o["devices_per_node"] * o["nodes"]
    for run in runs:
        batch, accelerator = run.config["data.batch_size"], run.config["trainer.accelerator"]
        if batch % world:
            raise ConfigError(
                f"{run.name}: data.batch_size {batch} is the global batch and must divide "
                f"among the {world} processes (--devices_per_node x --nodes)"
            )
        if o["gpus_per_node"] and accelerator == "cpu":
            raise ConfigError(
                f"{run.name}: trainer.accelerator is cpu, so the runs would leave the "
                "--gpus_per_node GPUs idle; set it to gpu or auto in --config"
            )


def check_workdir(workdir: str) -> None:
    if not os.path.isfile(os.path.join(workdir, "cli.py")):
        raise ConfigError(f"--workdir: {workdir} holds no cli.py; give the project directory")


def submit(path: Path) -> str:
    """``sbatch <path>``; the job id, or ConfigError with sbatch's own words."""
    try:
        done = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        raise ConfigError("sbatch is not on PATH; run this on a SLURM login node") from None
    said = " ".join((done.stderr or done.stdout).split())
    found = SUBMITTED.search(done.stdout)
    if done.returncode != 0 or not found:
        raise ConfigError(f"sbatch {path} failed (exit {done.returncode}): {said}")
    return found.group(1)


def write_script(o: dict[str, Any]) -> Path:
    """Validate the selection and the job, then write the script; nothing on an error."""
    text = sbatch_script(o)  # refuses values that break an #SBATCH line
    check_workdir(o["workdir"])
    selection = sweep.Selection(**{option.name: o[option.name] for option in SELECTION})
    runs, _, _ = sweep.prepare(selection, sweep.Placement(job_id=0, total_jobs=o["total_jobs"]))
    check_runs(runs, o)
    if o["total_jobs"] > len(runs):
        print(f"note: {o['total_jobs']} tasks for {len(runs)} runs; some idle", file=sys.stderr)
    path = script_path(o)
    write_atomic(path, text)
    return path


def main(**options: Any) -> int:
    # The docstring and signature, which cli.py turns into flags, are set below.
    o = resolve_options(options)
    path = write_script(o)
    print(path)
    if not o["submit"]:
        return 0
    try:
        job = submit(path)
    except ConfigError as err:  # the script stays: it can be submitted by hand
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(job)
    logs = f"{log_dir(o)}/{o['job_name']}_{job}_<task>.out"
    print(f"submitted array job {job}; logs: {logs}", file=sys.stderr)
    return 0


# cli.py builds `cli.py slurm`'s flags from main's signature and docstring (run_command),
# so both derive from OPTIONS.
main.__signature__ = inspect.Signature(
    [
        inspect.Parameter(
            o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.type
        )
        for o in OPTIONS
    ],
    return_annotation=int,
)
main.__doc__ = (
    "Write <runs_dir>/slurm/<selection>_<N>jobs.sbatch (task logs beside it), which runs a "
    "sweep as a SLURM job array; --submit submits it.\n\n"
    "Args:\n" + "".join(f"    {o.name}: {o.help}\n" for o in OPTIONS)
)
