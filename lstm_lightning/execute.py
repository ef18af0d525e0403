"""One run of a sweep, in this process: train it as ``cli.py fit`` would, record its result.

``run_one`` takes the run's lock (``runs.lock``), looks at its folder again (another sweep
may have run it meanwhile), trains it through ``fit.build_cli`` on the resolved text of
its ``config.yaml``, and writes ``result.json`` through ``results``. Whatever goes wrong
inside one run (its training raises, its folder is not writable, a checkpoint in it is
unreadable) becomes that run's ``failed`` result with one line, never the sweep's end.
The sequential sweep calls it directly; each worker process (``workers``) calls it too.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass

import torch
from filelock import Timeout
from lightning.pytorch.utilities import rank_zero_only

from lstm_lightning import clock, results, runs
from lstm_lightning import workers as pool
from lstm_lightning.config_hash import config_hash
from lstm_lightning.files import write_atomic
from lstm_lightning.fit import build_cli
from lstm_lightning.requeue import Requeued
from lstm_lightning.runs import Run


@dataclass
class Outcome:
    """What became of a run the sweep sent: ``how`` it ended and the result it has now.

    ``how``: ran (``result`` is this attempt's), requeued (SLURM requeues the job; no
    result), busy (another process holds its lock; only when not waiting), elsewhere
    (another process ran it meanwhile: ``result`` is theirs), held (its folder now holds
    a changed config or an unreadable result; ``note`` says which).
    """

    how: str
    result: dict | None = None
    note: str = ""


def is_writer() -> bool:
    """Global rank 0 (Lightning's reading of RANK / SLURM_PROCID) writes; others only train."""
    return rank_zero_only.rank == 0


def run_one(run: Run, threads: int | None = None, wait: bool = True) -> Outcome:
    """Execute a run on ``threads`` torch threads (None: as they are) under its lock,
    waiting for it unless ``wait`` is False. Under DDP (one run over several processes)
    every rank trains it and no lock is taken: the ranks must agree without one."""
    if runs.world_size(run.config) > 1:
        return attempt(run, threads)
    try:
        guard = runs.lock(run.dir)
        guard.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return Outcome("busy")
    except OSError as err:
        return Outcome("ran", unwritable(run, err))
    try:
        before = run.action
        runs.plan(run)  # as its folder is now, under the lock
        if run.action == "skip":
            return Outcome("elsewhere", runs.read_result(run.dir), run.note)
        if run.action in ("refuse", "hold"):
            return Outcome("held", None, run.note)
        if before in ("run", "resume", "fail") and run.action != before:
            run.note = f"{run.note} (was {before})"
        return attempt(run, threads)
    finally:
        guard.release()


def attempt(run: Run, threads: int | None) -> Outcome:
    """Train the run (or record why it cannot); any exception becomes a ``failed`` result."""
    if run.action == "fail":
        return Outcome("ran", record(run, failed(run, run.note, 0.0)))
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
        return Outcome("requeued")
    return Outcome("ran", record(run, result))


def record(run: Run, result: dict) -> dict:
    """Write the result (rank 0); a folder that cannot take it is said, not fatal."""
    if is_writer():
        try:
            results.write(run.dir, result)
        except (OSError, results.ResultError) as err:  # the folder, or a value out of schema
            result = {**result, "error": result["error"] or f"result.json not written: {err}"}
    return result


def unwritable(run: Run, err: OSError) -> dict:
    """The result of a run whose folder cannot be written: failed, recorded nowhere."""
    return failed(
        run, f"cannot write into {run.dir} ({err.strerror or err}); nothing recorded", 0.0
    )


def execute(run: Run) -> dict | None:
    """Train one run in this process as ``cli.py fit --config <run>/config.yaml`` would;
    None when it stopped for a SLURM requeue.

    Every rank parses the same resolved text (not the file, which rank 0 may still be
    writing); a resumed run starts from its newest checkpoint.
    """
    if is_writer():
        if run.action == "run":
            runs.clear(run.dir)
        write_atomic(run.dir / runs.CONFIG, run.text)
    args = ["fit", "--config", run.text]
    resumed_from = None
    newest = runs.newest_checkpoint(run.dir) if run.action == "resume" else None
    if newest is not None:
        path, resumed_from = newest
        args += ["--ckpt_path", str(path)]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # intended here
        # Lightning's hint to use srun, printed wherever srun is installed: the sweep
        # runs under srun when it should (cli.py slurm), and locally when it should not.
        warnings.filterwarnings("ignore", r"The `srun` command is available")
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
    metrics, model = cli.trainer.callback_metrics, cli.model
    values = {name: metrics.get(name) for name in results.METRICS}
    values = {name: None if v is None else float(v) for name, v in values.items()}
    values["train/loss"] = model.last_train_loss  # the last step's, not a logged mean
    return results.make(
        **identity(run),
        status="diverged" if model.diverged_at_step is not None else "completed",
        metrics=values,
        steps=cli.trainer.global_step,
        tokens_per_second=tokens_per_second,
        wall_seconds=wall,
        diverged_at_step=model.diverged_at_step,
        resumed_from_step=resumed_from,
        world_size=cli.trainer.world_size,
        **compute(wall, cli.trainer.world_size, clock.earlier_core_seconds(cli.trainer)),
    )


def compute(wall: float, world_size: int = 1, earlier: float = 0.0) -> dict:
    """``threads`` and ``core_seconds``: what the run cost, this attempt (``wall``) and
    the ``earlier`` ones its checkpoint counted (``lstm_lightning.clock``)."""
    threads = torch.get_num_threads()
    return {"threads": threads, "core_seconds": earlier + wall * threads * world_size}


def identity(run: Run) -> dict:
    return {
        "group": run.group,
        "label": run.label,
        "overrides": run.overrides,
        "config_hash": config_hash(run.text),
        "hparams": {alias: run.hparam(alias) for alias in results.HPARAMS},
    }


def failure_record(run: Run, err: BaseException, wall: float) -> dict:
    rank = rank_zero_only.rank
    try:
        write_atomic(
            run.dir / ("traceback.txt" if rank == 0 else f"traceback.rank{rank}.txt"),
            traceback.format_exc(),
        )
    except OSError:  # the folder refuses writes: the one line below says enough
        pass
    return failed(run, f"{type(err).__name__}: {err}".splitlines()[0], wall)


def failed(run: Run, summary: str, wall: float, worker_death: str | None = None) -> dict:
    return results.make(
        **identity(run),
        status="failed",
        wall_seconds=wall,
        **compute(wall),
        error=summary,
        worker_death=worker_death,
    )


def record_death(run: Run, reason: str, started: float) -> dict:
    """The result of a run whose worker died under it: ``failed``, ``worker_death`` the
    reason; its ``last.ckpt`` stays, so ``--retry_failed`` resumes it. A result the worker
    wrote before dying (after ``started``, a ``time.time()``) stands."""
    path = run.dir / results.FILE
    if path.exists() and path.stat().st_mtime >= started:
        try:
            return results.read(path)
        except results.ResultError:
            pass
    elapsed = time.time() - started
    return record(run, failed(run, f"{reason}; --retry_failed resumes it", elapsed, reason))


# --- the runs of a shard: one after another, or in worker processes -------------


def sequential(todo: list[Run], threads: list[int | None]) -> list[Outcome]:
    """One run after another, in this process. A run another sweep holds waits until the
    others are done. SIGTERM or Ctrl-C ends the sweep (exit 143 or 130) with one line."""
    outcomes, line = [], Progress(todo)
    queue = [(run, t, False) for run, t in zip(todo, threads)]
    with Stopping() as stop:
        while queue:
            run, t, wait = queue.pop(0)
            line.started(run, ", waits for the sweep that holds it" if wait else "")
            try:
                outcome = run_one(run, t, wait=wait)
            except (KeyboardInterrupt, SystemExit):
                stop.end(run)  # raises SystemExit(128 + signal) when a signal stopped it
                raise
            if outcome.how == "busy":
                queue.append((run, t, True))
                line.requeued(run)
                continue
            outcomes.append(outcome)
            line.finished(run, outcome)
            if outcome.how == "requeued":
                say(f"[sweep] requeued during {run.name}: stopping; the requeued job resumes it")
                break
    return outcomes


class Stopping:
    """SIGTERM and Ctrl-C while the sweep runs in this process. Lightning handles SIGTERM
    during training (it stops at the end of the step); between runs we stop at once. Either
    way the sweep ends with one line and exit 128 + the signal."""

    def __enter__(self) -> Stopping:
        self.signum = None
        self.previous = {
            s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def on_signal(self, signum, frame) -> None:
        self.signum = signum
        # Under fit our handler is one of Lightning's (it chains what it found): leave
        # SIGTERM to it, which stops between two steps with its checkpoints whole.
        if signum == signal.SIGINT or signal.getsignal(signal.SIGTERM) == self.on_signal:
            raise KeyboardInterrupt

    def end(self, run: Run) -> None:
        if self.signum is None:
            return
        name = signal.Signals(self.signum).name
        say(f"[sweep] stopped by {name} during {run.name}: it resumes from its last.ckpt next time")
        raise SystemExit(128 + self.signum) from None


def parallel(todo: list[Run], threads: list[int], size: int, cores: int) -> list[Outcome]:
    """Longest first, in ``size`` worker processes, the threads in use within ``cores``.
    Ctrl-C or SIGTERM stops the workers; their runs resume from last.ckpt next time."""
    order = sorted(range(len(todo)), key=lambda i: (-todo[i].cost, i))
    todo, threads = [todo[i] for i in order], [threads[i] for i in order]
    outcomes, line, started = [], Progress(todo), {}
    try:
        with pool.Pool(run_in_worker, size) as workers:
            for event in workers.run(todo, threads, cores):
                run, t = todo[event.index], threads[event.index]
                if event.kind == "start":
                    started[event.index] = time.time()
                    line.started(run, f", pid {event.detail}, {t} thread{'s' * (t > 1)}")
                    continue
                outcome = event.detail
                if event.kind == "died":
                    say(
                        f"[sweep] {run.name}: {event.detail}; recorded as failed, a new worker starts"
                    )
                    outcome = Outcome("ran", record_death(run, event.detail, started[event.index]))
                outcomes.append(outcome)
                line.finished(run, outcome)
    except KeyboardInterrupt:
        say("[sweep] interrupted: workers stopped; their runs resume from last.ckpt next time")
        raise SystemExit(130) from None
    except pool.WorkerStartError as err:
        say(f"[sweep] {err}")
        raise SystemExit(1) from None
    return outcomes


def run_in_worker(run: Run, threads: int) -> Outcome:
    """What a worker process does with each run it is sent (see ``workers``): wait for
    its lock, since a worker cannot hand a run back."""
    quiet_lightning()
    return run_one(run, threads, wait=True)


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

    def requeued(self, run: Run) -> None:
        self.k -= 1
        say(f"[sweep] {run.name}: another sweep holds it; back to it at the end")

    def finished(self, run: Run, outcome: Outcome) -> None:
        self.done += run.cost
        self.left -= run.cost
        if outcome.how == "elsewhere":
            say(f"[sweep] {run.name}: another sweep ran it: {outcome.note}")
        elif outcome.how == "held":
            say(f"[sweep] {run.name}: left as it is: {outcome.note}")


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def quiet_lightning() -> None:
    """Lightning's per-run banners (GPU available, seed set, ...) would bury the progress."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
