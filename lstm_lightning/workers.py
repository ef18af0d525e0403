"""Local sweep parallelism: up to K runs at once, each in a long-lived worker process.

Importing torch and Lightning takes seconds, so each of the K workers is started once and
then trains one run after another through the sequential sweep's own in-process path
(``execute.run_one``), receiving its runs over its own pipe. Workers are started with
"spawn": a forked copy of a process whose OpenMP thread pool exists can deadlock. They
share nothing but the runs folder, where every write is atomic.

The cores are a budget of threads. A run holds ``threads_for(work)`` of them while it
trains: one for a narrow run (its matmuls are too small to split, and one thread is
faster per core), more for a wide one. Runs start longest first, and the next run waits
until enough cores are free, so the threads in use never exceed the cores.

A worker that dies (SIGKILL, the out-of-memory killer) loses only the run it held: the
pool reports it, starts a new worker in its place and goes on. Ctrl-C or SIGTERM stops
every worker; a worker also dies with the sweep process, even when that is SIGKILLed.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from lstm_lightning.errors import ConfigError

# A run gets one thread, plus one for each width-512 step's worth of work (tokens x layers
# x H^2 per training step; 32 x 64 tokens, one layer): width 512 gets 2 threads, 1024
# gets 5. Narrow steps are too small to split: at width 16 one thread beats two even on
# an idle pair of cores, and while runs are waiting a core does more as another worker
# than as a second thread. Where a second thread starts to pay for itself is yet to be
# measured on a quiet machine (benchmarks/throughput.py --threads 1, then 2): at width
# 512 a time step's recurrent matmul, (32 x 512) @ (512 x 2048), is 67 MFLOP, which two
# threads split with little overhead; at width 128 it is 4 MFLOP.
WORK_PER_EXTRA_THREAD = 32 * 64 * 512**2
# A run's estimated cost (steps x tokens x (layers x H^2 + 4096), see runs.resolve)
# runs at about 1e9 a second on one core, at width 16 as at 512 (benchmarks/README.md,
# Lightning side: 245k tokens/s x (16^2 + 4096), 3,985 tokens/s x (512^2 + 4096)).
COST_PER_SECOND = 1e9
RUN_SECONDS = 1.0  # what a run takes beyond its steps: building it, validating, saving
STARTUP_SECONDS = 5.0  # a worker's start: importing torch and Lightning
STOP_SECONDS = 10  # how long a stopped worker may take to finish its step before SIGKILL


# --- how many workers, how many threads ----------------------------------------------------


def parse_workers(value: str | int) -> int | None:
    """``--workers``: a whole number of at least 1, or None for ``auto``."""
    text = str(value).strip()
    if text == "auto":
        return None
    if re.fullmatch(r"[0-9]+", text) and int(text) >= 1:
        return int(text)
    raise ConfigError(
        f"--workers: expected auto or a whole number of at least 1 (runs at once), got {value!r}"
    )


def available_cores(env=os.environ) -> int:
    """The cores this process may run on (its CPU affinity: what taskset, cgroups or a
    SLURM allocation leave it), at most ``SLURM_CPUS_PER_TASK`` when that is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def thread_cap(cores: int, env=os.environ) -> int:
    """The most threads one run may take: the cores, or ``OMP_NUM_THREADS`` where the user
    set it lower (a per-process limit, e.g. on a machine shared with other work)."""
    omp = env.get("OMP_NUM_THREADS", "")
    return min(cores, int(omp)) if omp.isdigit() and int(omp) > 0 else cores


def threads_for(work: float, cap: int) -> int:
    """Threads for a run whose training step does ``work`` (tokens x layers x H^2)."""
    return max(1, min(cap, 1 + int(work // WORK_PER_EXTRA_THREAD)))


def resolve_workers(
    requested: int | None, costs: list[float], cores: int, slurm: bool, on_cpu: bool = True
) -> int:
    """The worker count. ``auto`` (None) is one per core, but no more than the runs to do,
    and 1 where workers would not pay: a sweep shorter than the workers' start-up, runs on
    an accelerator (one at a time has it to itself), or under SLURM (srun's ranks, DDP)."""
    if slurm:
        if requested not in (None, 1):
            raise ConfigError(
                f"--workers {requested}: under srun (a SLURM job) or with --devices/--num_nodes "
                "a sweep runs one run at a time over the whole allocation; drop --workers, "
                "and run more at once as array tasks (cli.py slurm --total_jobs N)"
            )
        return 1
    if requested is not None:
        return requested
    k = min(cores, len(costs))
    if k <= 1 or not on_cpu:
        return 1
    # In parallel: the workers' start-up, then the work split k ways.
    alone = sum(RUN_SECONDS + cost / COST_PER_SECOND for cost in costs)
    return k if STARTUP_SECONDS + alone / k < alone else 1


# --- which run starts next ----------------------------------------------------------------


class Scheduler:
    """Runs in the given order (longest first), each holding ``threads[i]`` of ``cores``
    while it trains, at most ``workers`` at once. The head of the queue waits until its
    threads fit rather than let smaller runs pass it, so a wide run is never starved."""

    def __init__(self, threads: list[int], cores: int, workers: int):
        if any(not 1 <= t <= cores for t in threads):
            raise ValueError(f"every run needs 1 to {cores} threads, got {threads}")
        self.threads, self.free, self.workers = threads, cores, workers
        self.pending = collections.deque(range(len(threads)))
        self.running: set[int] = set()

    def next(self) -> int | None:
        """The run to start now, or None until one finishes (or when none is left)."""
        if not self.pending or len(self.running) >= self.workers:
            return None
        head = self.pending[0]
        if self.threads[head] > self.free:
            return None
        self.pending.popleft()
        self.free -= self.threads[head]
        self.running.add(head)
        return head

    def finish(self, index: int) -> None:
        self.running.remove(index)
        self.free += self.threads[index]

    @property
    def done(self) -> bool:
        return not self.pending and not self.running


# --- the worker processes -----------------------------------------------------------------


@dataclass
class Event:
    """What the pool reports: a run started (``detail``: the worker's pid), finished
    (``detail``: what ``fn`` returned) or lost with its worker (``detail``: the reason)."""

    kind: str  # start | done | died
    index: int
    detail: Any


def serve(conn, fn: Callable[[Any, int], Any], parent: int) -> None:
    """A worker's life: imports are done (unpickling ``fn`` did them), then run each
    ``(job, threads)`` the pipe brings until it brings None or closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's: it stops us
    die_with(parent)
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the sweep is gone
            message = None
        if message is None:
            break
        job, threads = message
        conn.send(("done", fn(job, threads)))
    # Every run has flushed and closed its files; skip the interpreter's teardown of torch
    # and Lightning, which takes seconds.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def die_with(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when the sweep process dies, however it
    dies, so no worker is left training alone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe stops us after this run
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


DIED = "worker died"


def death(exitcode: int | None) -> str:
    """Why a worker is gone, in words: its signal or its exit status."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = ", e.g. the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"{DIED} with signal {-exitcode} ({name}{hint})"
    return f"{DIED} with exit status {exitcode}"


class WorkerStartError(RuntimeError):
    """A worker died before it was ready: every other would too (a broken install)."""


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    conn: Any
    job: int | None = None
    ready: bool = False


class Pool:
    """``size`` worker processes that each call ``fn(job, threads)`` (a module-level
    function: it is pickled by name). Use it as a context manager: leaving stops them."""

    def __init__(self, fn: Callable[[Any, int], Any], size: int):
        self.fn, self.size = fn, size
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[Worker] = []

    def start_worker(self) -> Worker:
        mine, theirs = self.context.Pipe()
        # Not a daemon: a run may start DataLoader workers of its own (data.num_workers).
        process = self.context.Process(
            target=serve, args=(theirs, self.fn, os.getpid()), name="sweep-worker"
        )
        process.start()
        theirs.close()
        return Worker(process, mine)

    def __enter__(self) -> Pool:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, interrupt)
        self.workers = [self.start_worker() for _ in range(self.size)]
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def run(self, jobs: list, threads: list[int], cores: int) -> Iterator[Event]:
        """Run every job once, in order as cores allow; report events as they happen."""
        schedule = Scheduler(threads, cores, self.size)
        while not schedule.done:
            for worker in self.workers:
                if worker.job is None and (index := schedule.next()) is not None:
                    worker.job = index
                    worker.conn.send((jobs[index], threads[index]))
                    yield Event("start", index, worker.process.pid)
            ready = wait(
                [w.conn for w in self.workers] + [w.process.sentinel for w in self.workers]
            )
            for k, worker in enumerate(self.workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    yield from self.hear(k, worker, schedule)

    def hear(self, k: int, worker: Worker, schedule: Scheduler) -> Iterator[Event]:
        """Take a worker's message; replace it if it is gone."""
        try:
            message = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):  # closed: the process has exited
            message = None
        if message is not None and message[0] == "ready":
            worker.ready = True
        elif message is not None:
            index, worker.job = worker.job, None
            schedule.finish(index)
            yield Event("done", index, message[1])
        elif not worker.process.is_alive():
            worker.process.join()
            worker.conn.close()
            if not worker.ready:
                raise WorkerStartError(
                    f"a sweep worker process failed to start ({death(worker.process.exitcode)}); "
                    "see its error above, or run with --workers 1"
                )
            self.workers[k] = self.start_worker()
            if worker.job is not None:
                schedule.finish(worker.job)
                yield Event("died", worker.job, death(worker.process.exitcode))

    def stop(self) -> None:
        """Idle workers leave when told; busy ones get SIGTERM (Lightning stops at the end
        of the step), then SIGKILL after ``STOP_SECONDS``. Their runs keep their last.ckpt."""
        for worker in self.workers:
            try:
                if worker.job is None and worker.ready:
                    worker.conn.send(None)
                else:
                    worker.process.terminate()
            except (OSError, ValueError):  # already gone
                pass
        for worker in self.workers:
            worker.process.join(STOP_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []


def interrupt(signum, frame) -> None:
    """SIGTERM to the sweep process: stop like Ctrl-C, so the pool stops its workers."""
    raise KeyboardInterrupt(f"signal {signum}")
