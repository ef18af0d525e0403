"""``cli.py tune``: a hyperparameter search with Optuna, one ordinary run folder per trial.

A study lives in ``<runs_dir>/<study>/``: ``study.journal`` (Optuna's journal file storage,
which works on a network filesystem without a database server), ``study.yaml`` (its
definition, written once; a rerun that differs is refused) and ``trial_NNNN/``, each an
ordinary run (``runs.Run``: group = the study, label = ``trial_NNNN``, overrides = the
trial's params) trained through the sweep's runner (``execute.run_one``: its lock, resume,
divergence, TensorBoard), so ``cli.py fit --config trial_NNNN/config.yaml`` reproduces it
and ``cli.py report`` reads its ``result.json`` (``study`` and ``trial`` set).

``--trials N`` is the total over every process on the study. A process claims its next
trial under the study's ask lock (``.ask.lock``, an fcntl lock): first a RUNNING trial
whose claim lock (``trial_NNNN/.trial.lock``, held for the trial's whole life and released
by the OS when its holder dies, even by SIGKILL) is free, which a killed process left and
which resumes from its ``last.ckpt`` into its own trial number; else a new trial, while
finished + running trials < N. Local workers (``--workers K``: K processes running this
same loop) and SLURM array tasks (``cli.py slurm-tune``) share the study through the file.

Trial n's params are a function of (sampler, seed, n) for random and qmc, whichever process
asks it and in whatever order: each trial gets its own sampler seeded from (seed, n).
qmc is a scrambled Halton sequence indexed by the trial number (Optuna's QMCSampler needs
scipy, and counts its samples in a study attribute that processes update without a lock).
tpe (Optuna's TPESampler) is adaptive: after its random start it follows the results.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import docstring_parser
from filelock import FileLock
from jsonargparse.typing import NonNegativeInt, PositiveInt
from optuna.trial import TrialState

from lstm_lightning import results, slurm
from lstm_lightning import runs as folders
from lstm_lightning import workers as pool
from lstm_lightning.errors import ConfigError
from lstm_lightning.execute import Stopping, quiet_lightning, run_one, say
from lstm_lightning.files import write_atomic
from lstm_lightning.runs import Run
from lstm_lightning.study import (
    ASK_LOCK,
    DEFINITION,
    JOURNAL,
    Claim,
    Handle,
    Setup,
    Spec,
    abandoned,
    check_definition,
    claim_next,
    label,
    prepare,
    preview,
    resolve_run,
)
from lstm_lightning.sweep import on_cpu, under_slurm

# --- one trial ----------------------------------------------------------------------------


def work(handle: Handle, claim: Claim, threads: int | None) -> str:
    """Train the claimed trial as a sweep run and tell Optuna how it ended; what it did:
    told, or requeued (SLURM resumes it; it stays RUNNING)."""
    setup, number = handle.setup, claim.number
    run = Run(setup.spec.study, label(number), claim.params)
    if set(claim.params) != set(setup.space):  # killed between ask and suggest
        return tell(handle, number, None, "its params were never drawn (its process died)")
    try:
        resolve_run(run, setup)
    except ConfigError as err:
        return tell(handle, number, None, str(err))
    folders.plan(run)
    how = f"{run.action}{', adopted from a dead process' if claim.adopted else ''}"
    params = " ".join(f"{k}={fmt(v)}" for k, v in claim.params.items())
    say(f"[tune] {run.name} ({how}): {params}")
    outcome = run_one(run, threads)
    if outcome.how == "requeued":
        return "requeued"
    if outcome.result is None:
        return tell(handle, number, None, outcome.note or f"{outcome.how}: no result")
    result = mark(run, outcome.result, number)
    value = result["metrics"].get(setup.spec.objective)
    if result["status"] == "diverged":
        handle.set_attr(number, "diverged_at_step", result["diverged_at_step"])
        return tell(handle, number, None, f"diverged at step {result['diverged_at_step']}")
    if result["status"] != "completed" or value is None or not math.isfinite(value):
        return tell(handle, number, None, result["error"] or f"no {setup.spec.objective}")
    return tell(handle, number, value, "")


def mark(run: Run, result: dict, number: int) -> dict:
    """The result with ``study`` and ``trial`` set, written again where it lacks them."""
    marked = {**result, "study": run.group, "trial": number}
    if marked != result and (run.dir / results.FILE).exists():
        try:
            results.write(run.dir, marked)
        except (OSError, results.ResultError) as err:
            say(f"[tune] {run.name}: cannot mark its result.json ({err})")
    return marked


def tell(handle: Handle, number: int, value: float | None, why: str) -> str:
    """A value (COMPLETE), or FAIL with ``why`` in the trial's user attr ``error``."""
    name = f"{handle.setup.spec.study}/{label(number)}"
    if value is None:
        handle.set_attr(number, "error", why)
        handle.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        say(f"[tune] {name}: failed: {why}")
    else:
        handle.study.tell(number, value, skip_if_finished=True)
        say(f"[tune] {name}: {handle.setup.spec.objective} {fmt(value)}; {best_line(handle)}")
    return "told"


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_line(handle: Handle) -> str:
    try:
        best = handle.study.best_trial
    except ValueError:
        return "no trial completed yet"
    params = " ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
    return f"best: trial {best.number} ({label(best.number)}) {fmt(best.value)}, {params}"


# --- the loop, in this process or in workers ----------------------------------------------


def loop(spec: Spec, setup: Setup | None = None) -> None:
    """Claim, train and tell trials until the study needs no more (or SLURM requeues)."""
    setup = setup or prepare(spec)
    handle = Handle(setup)
    slurm = under_slurm()
    threads = (
        None
        if slurm
        else pool.threads_for(setup.probe.work, pool.thread_cap(pool.available_cores()))
    )
    with Stopping() as stop:
        while (claim := claim_next(handle)) is not None:
            try:
                how = work(handle, claim, threads)
            except (KeyboardInterrupt, SystemExit):
                stop.end(Run(spec.study, label(claim.number), {}))
                raise
            finally:
                claim.lock.release()
            if how == "requeued":
                say(f"[tune] requeued during {label(claim.number)}: the requeued job resumes it")
                return


def worker(spec: Spec) -> None:
    """A worker process: the same loop on the shared journal."""
    quiet_lightning()
    loop(spec)


def in_workers(spec: Spec, count: int) -> None:
    """``count`` processes running ``loop``; then this one, to adopt what a dead one left."""
    context = multiprocessing.get_context("spawn")  # no forked torch or lock state
    procs = [context.Process(target=worker, args=(spec,)) for _ in range(count)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join()
        say("[tune] interrupted: the running trials resume from last.ckpt next time")
        raise SystemExit(130) from None
    dead = [p.exitcode for p in procs if p.exitcode]
    if dead:
        say(f"[tune] {len(dead)} worker(s) ended with status {dead}; this process goes on")


def plan_text(setup: Setup) -> str:
    """The plan: where the study is, what is done, the next trials' params."""
    spec, journal = setup.spec, setup.spec.folder / JOURNAL
    counts = Handle(setup).counts() if journal.exists() else {"finished": 0, "running": 0}
    left = max(0, spec.trials - counts["finished"] - counts["running"])
    first = counts["finished"] + counts["running"]
    lines = [
        f"study {spec.study} in {spec.folder} ({'exists' if journal.exists() else 'new'}): "
        f"{spec.trials} trials, {counts['finished']} finished, {counts['running']} running, "
        f"{left} to ask; sampler {spec.sampler} seed {spec.seed}, objective {spec.objective}",
    ]
    if spec.sampler == "tpe":
        lines.append("tpe is adaptive: after its random start its draws follow the results")
    for number in range(first, first + left):
        params = preview(setup.space, spec.sampler, spec.seed, number)
        lines.append(f"  {label(number)}  " + " ".join(f"{k}={fmt(v)}" for k, v in params.items()))
    return "\n".join(lines)


def main(
    *,
    config: str,
    space: str,
    study: str,
    trials: PositiveInt,
    sampler: Literal["tpe", "random", "qmc"] = "tpe",
    seed: NonNegativeInt = 0,
    objective: Literal["val/loss", "val/loss_best"] = "val/loss",
    runs_dir: str = "runs",
    workers: str = "auto",
    transfer: bool = True,
    dry_run: bool = False,
) -> int:
    """Search hyperparameters with Optuna: one ordinary run folder per trial.

    Args:
        config: The base config (the proxy: its width, base width, steps, data).
        space: The search space file (see configs/space_lstm.yaml).
        study: The study's name: its folder <runs_dir>/<study>/ and its Optuna name.
        trials: Trials in total over every process working on the study.
        sampler: tpe (Optuna's TPE, adaptive), random or qmc (scrambled Halton). tpe is
            the default: in the μTransfer study it found better proxies than random at
            equal trials on both corpora (docs/results.md); random and qmc make trial
            n's params a function of the seed alone, whatever the workers do.
        seed: The sampler's seed: trial n's params follow from it (random, qmc; tpe's
            random start).
        objective: The result's metric to minimize.
        runs_dir: Where the study's folder goes.
        workers: Trials at once on this machine, each process on the shared study: a
            number, or auto (one per core, as for sweep; 1 under SLURM).
        transfer: Refuse keys that do not transfer across width (regularization, shape).
        dry_run: Print the plan and the next trials' params; train nothing.
    """
    requested = pool.parse_workers(workers)
    spec = Spec(
        config, space, study, int(trials), sampler, int(seed), objective, runs_dir, transfer
    )
    setup = prepare(spec)
    if dry_run:
        print(plan_text(setup))
        return 0
    spec.folder.mkdir(parents=True, exist_ok=True)
    with FileLock(spec.folder / ASK_LOCK):  # one process creates the study, the others load it
        check_definition(setup)
        handle = Handle(setup)
    counts = handle.counts()
    if counts["finished"] >= trials and not abandoned(handle):
        say(f"[tune] study {study} is complete: {counts['finished']} of {trials} trials")
    else:
        left = max(1, trials - counts["finished"])
        cost = [setup.probe.cost] * left
        cores, in_job = pool.available_cores(), under_slurm()
        count = pool.resolve_workers(requested, cost, cores, in_job, on_cpu([setup.probe]))
        quiet_lightning()
        if count > 1:
            in_workers(spec, min(count, left))
        loop(spec, setup)
    say(summary(handle))
    return 0


def summary(handle: Handle) -> str:
    spec = handle.setup.spec
    trials = handle.study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    said = ", ".join(f"{n} {s}" for s, n in states.items() if n)
    return "\n".join(
        [
            f"[tune] study {spec.study}: {len(trials)} trials ({said or 'none'})",
            f"[tune] {best_line(handle)}",
            f"[tune] trials: {spec.folder}/trial_NNNN/ (config.yaml, result.json); study: "
            f"{spec.folder}/{DEFINITION}, {spec.folder}/{JOURNAL}",
            f"[tune] summarize: python cli.py report --runs_dir {spec.runs_dir}",
        ]
    )


# --- cli.py slurm-tune: an array whose tasks all work on the one study ----------------------

# tune's own flags, as slurm.Option rows, then slurm's job options (one process per task:
# a trial trains on one device, so no --nodes or --devices_per_node).
TUNE_FLAGS = (
    *("config", "space", "study", "trials", "sampler", "seed", "objective", "runs_dir"),
    "transfer",
)
SLURM_JOB = tuple(o for o in slurm.JOB if o.name not in ("nodes", "devices_per_node"))
SLURM_EXPLANATION = """\
#
# Written by `python cli.py slurm-tune`, and rewritten by it: change the command, not this file.
# Every task of the array runs `cli.py tune` on the one study: they share its journal
# file and together finish exactly --trials trials. A task killed or requeued leaves its
# trial RUNNING; the next task to claim one resumes it from its last.ckpt."""


def slurm_main(**options: Any) -> int:
    # The docstring and signature, which cli.py turns into flags, are set below.
    defaults = inspect.signature(main).parameters
    tuned = {name: options.get(name, defaults[name].default) for name in TUNE_FLAGS}
    missing = [name for name, value in tuned.items() if value is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"--{missing[0]} is required")
    job = {o.name: options.get(o.name, o.default) for o in SLURM_JOB}
    for option in SLURM_JOB:
        slurm.check_value(option, job[option.name])
    o = slurm.derive({**job, "nodes": 1, "devices_per_node": 1, "definitions": None, **tuned})
    o["space"] = os.path.abspath(o["space"])
    spec = Spec(**{name: o[name] for name in TUNE_FLAGS})
    prepare(spec)  # a bad space, base config or name: one line, nothing written
    text = slurm_script(o)
    slurm.check_workdir(o["workdir"])
    path = Path(slurm.log_dir(o)) / f"tune_{spec.study}_{o['total_jobs']}jobs.sbatch"
    write_atomic(path, text)
    print(path)
    if not o["submit"]:
        return 0
    try:
        job_id = slurm.submit(path)
    except ConfigError as err:  # the script stays: it can be submitted by hand
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(job_id)
    return 0


def slurm_script(o: dict[str, Any]) -> str:
    """The array's script: every task one ``cli.py tune`` process, one trial at a time."""
    argv = [o["python"], "cli.py", "tune"]
    for name in TUNE_FLAGS:
        if isinstance(o[name], bool):
            argv += [f"--{name}" if o[name] else f"--no_{name}"]
        else:
            argv += [f"--{name}", str(o[name])]
    return slurm.job_script(o, SLURM_EXPLANATION, [*argv, "--workers", "1"])


def _declare_slurm_main() -> None:
    """``slurm_main``'s flags: tune's own (their types and help from ``main``), then the
    job's (``slurm.JOB``)."""
    keyword, hints = inspect.Parameter.KEYWORD_ONLY, typing.get_type_hints(main)
    params = inspect.signature(main).parameters
    docs = {d.arg_name: d.description for d in docstring_parser.parse(main.__doc__).params}
    rows = [(n, hints[n], params[n].default, " ".join(docs[n].split())) for n in TUNE_FLAGS]
    rows += [(o.name, o.type, o.default, o.help) for o in SLURM_JOB]
    slurm_main.__signature__ = inspect.Signature(
        [inspect.Parameter(n, keyword, default=d, annotation=t) for n, t, d, _ in rows],
        return_annotation=int,
    )
    slurm_main.__doc__ = (
        "Write <runs_dir>/slurm/tune_<study>_<N>jobs.sbatch, an array whose tasks all run "
        "cli.py tune on the one study; --submit submits it.\n\nArgs:\n"
        + "".join(f"    {n}: {h}\n" for n, _, _, h in rows)
    )


_declare_slurm_main()
