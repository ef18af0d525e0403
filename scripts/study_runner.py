"""A study as resumable steps: commands, or decisions of the driver's own, in order.

A step is any object with ``name`` (unique), ``argv`` (a command, or empty), ``action``
(a callable run first, in this process, returning a note: the driver's decisions and the
files a command reads), ``done_if`` (a callable that judges the step finished instead of
its marker), ``needs`` (names of the steps it reads the output of) and ``text()``.

A finished step leaves ``<runs>/.steps/<name>.done`` holding its command (``key``), so a
rerun skips it; a step whose command changed runs again. ``run`` starts up to ``jobs``
steps at once, each as soon as every step it needs has finished, earliest in the plan
first; with ``jobs`` 1 that is the plan's order. A failed step is reported and the steps
that need it are not started; the rest go on. SIGTERM or Ctrl-C stops every command in
flight (SIGTERM to each: their runs save ``last.ckpt``) and waits for them.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from lstm_lightning.files import write_atomic

STOPPED = (130, 143, -signal.SIGINT, -signal.SIGTERM)  # a command stopped by a signal


class StepFailed(Exception):
    """A step that cannot finish; its message says why and what to do."""


class Unchanged(Exception):
    """A step with nothing to do (e.g. a change the recipe already has): it counts as done."""


class Terminated(Exception):
    """SIGTERM, raised in the main thread so the commands in flight are stopped, not
    orphaned."""


def on_sigterm(signum, frame):
    raise Terminated


def say(line: str) -> None:
    print(line, flush=True)


_live: set[subprocess.Popen] = set()  # the commands in flight, for stop_all
_live_lock = threading.Lock()
_stopping = False  # set by stop_all: a command about to start does not


def run_command(argv: list[str]) -> int:
    """The command's exit status. Ctrl-C or SIGTERM (to this process, or to the command)
    stops the study: ``SystemExit(130)``, after the command is told and has ended."""
    with _live_lock:  # started and registered at once, so stop_all cannot miss it
        if _stopping:
            raise SystemExit(130)
        proc = subprocess.Popen(argv)
        _live.add(proc)
    try:
        status = proc.wait()
    except (KeyboardInterrupt, Terminated):  # only the main thread sees these
        proc.send_signal(signal.SIGTERM)
        status = proc.wait()
        status = 130 if status in (0, 1) else status
    finally:
        with _live_lock:
            _live.discard(proc)
    if status in STOPPED:
        say(f"[study] stopped (status {status}); run the same command again to resume")
        raise SystemExit(130)
    return status


def stop_all() -> None:
    """SIGTERM to every command in flight (their threads then see them end); no command
    starts after it."""
    global _stopping
    with _live_lock:
        _stopping = True
        for proc in _live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


def key(step) -> str:
    """What a finished step's marker holds: its command without the interpreter and the
    workers (neither changes what it computes)."""
    argv = list(step.argv[1:])
    if "--workers" in argv:
        i = argv.index("--workers")
        del argv[i : i + 2]
    return (shlex.join(argv) if argv else step.name) + "\n"


def marker(runs: Path, step) -> Path:
    return Path(runs) / ".steps" / f"{step.name}.done"


def is_done(runs: Path, step) -> bool:
    if step.done_if is not None:
        return step.done_if()
    path = marker(runs, step)
    return path.is_file() and path.read_text(encoding="utf-8").startswith(key(step))


def run(steps: list, runs: Path, jobs: int = 1) -> tuple[list[str], list[str]]:
    """Run every step not done yet (module doc); SIGTERM stops them all (the handler is
    restored after). Returns the names of the steps that failed, and of those not
    started because a step they need did not finish."""
    global _stopping
    _stopping = False
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _Run(steps, Path(runs), jobs).all()
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    def __init__(self, steps: list, runs: Path, jobs: int) -> None:
        self.runs, self.jobs = runs, max(1, jobs)
        self.names = {step.name for step in steps}
        unknown = sorted({n for step in steps for n in step.needs} - self.names)
        if unknown:  # a plan's bug: a misspelt need would let its step start early
            raise ValueError(f"steps need steps the plan does not have: {', '.join(unknown)}")
        self.state: dict[str, str] = {}  # name -> done | failed | blocked
        self.waiting = []
        for step in steps:
            if is_done(runs, step):
                say(f"[study] {step.name}: done")
                self.state[step.name] = "done"
            else:
                self.waiting.append(step)
        self.flight: dict[Future, tuple[object, str]] = {}  # command in flight -> step, note

    def all(self) -> tuple[list[str], list[str]]:
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            try:
                self.start_ready(pool)
                while self.flight:
                    # a timeout, so that SIGTERM's handler runs while the commands do
                    done, _ = wait(self.flight, timeout=1.0, return_when=FIRST_COMPLETED)
                    stopped = [f for f in done if f.exception() is not None]
                    for future in (f for f in done if f not in stopped):  # marked first
                        step, note = self.flight.pop(future)
                        self.settle(step, note, future.result())
                    for future in stopped:  # SystemExit: a command was stopped
                        future.result()
                    self.start_ready(pool)
            except BaseException:  # Ctrl-C, SIGTERM, a command stopped: stop the others
                stop_all()
                raise
        if self.waiting:  # needs that can never be met (a plan's bug, not a run's)
            raise StepFailed(f"steps wait on each other: {', '.join(s.name for s in self.waiting)}")
        return ([n for n, s in self.state.items() if s == "failed"],
                [n for n, s in self.state.items() if s == "blocked"])  # fmt: skip

    def start_ready(self, pool: ThreadPoolExecutor) -> None:
        """Start the earliest waiting steps whose needs are done, up to ``jobs`` in flight
        (a step settled at once, e.g. a decision, lets the later ones in the same pass).
        A step's action runs here, in the main thread: while one runs commands of its own
        (arm D's choice widening its grid), no other step starts."""
        for step in list(self.waiting):
            if len(self.flight) >= self.jobs:
                break
            lost = [n for n in step.needs if self.state.get(n) in ("failed", "blocked")]
            if lost:
                self.waiting.remove(step)
                self.state[step.name] = "blocked"
                say(f"[study] {step.name}: not started: it needs {', '.join(lost)}, which did "
                    "not finish")  # fmt: skip
            elif all(self.state.get(n) == "done" for n in step.needs):
                self.waiting.remove(step)
                self.start(step, pool)

    def start(self, step, pool: ThreadPoolExecutor) -> None:
        say(f"[study] {step.name}: {step.text()}")
        try:
            note = step.action() if step.action else ""
        except Unchanged as why:
            return self.settle(step, f"skipped: {why}", 0, ran=False)
        except StepFailed as err:
            return self.fail(step, str(err))
        if step.argv:
            self.flight[pool.submit(run_command, step.argv)] = (step, note)
        else:
            self.settle(step, note, 0)

    def settle(self, step, note: str, status: int, ran: bool = True) -> None:
        if ran and status:
            return self.fail(step, "its command failed (see above); rerun to retry")
        if step.done_if is None:
            write_atomic(marker(self.runs, step), key(step) + (f"# {note}\n" if note else ""))
        self.state[step.name] = "done"
        say(f"[study] {step.name}: finished{': ' + note if note else ''}")

    def fail(self, step, why: str) -> None:
        say(f"[study] {step.name}: FAILED: {why}")
        self.state[step.name] = "failed"
