"""Wall time of a sweep three ways, on the same machine and the same runs:

    a. one ``python cli.py fit --config <run>/config.yaml`` process per run, one after
       another (the shell-loop baseline: every run pays interpreter and Lightning start-up);
    b. ``python cli.py sweep --workers 1`` (one process, one run after another);
    c. ``python cli.py sweep`` (``--workers auto``: one worker process per core);
    o. with ``--before DIR``: c with the ``cli.py`` of another checkout (the code before a
       change), from this folder, so on the same files.

    python benchmarks/sweep.py                                  # the default sweep, 3 repeats
    python benchmarks/sweep.py --labels lstm_16d_sgd_mup_lr1,lstm_64d_sgd_mup_lr1 --repeats 1
    python benchmarks/sweep.py --record --note "quiet machine"  # also into README.md
    python benchmarks/sweep.py --edge --before ../before --ways aco --repeats 1
                                  # the saturating edge (benchmarks/edge_sweep.py), old code too

Each way, each repeat, trains into a fresh temporary runs folder. The table (median wall
seconds per way and the ratios a/c and b/c) goes to stdout; see benchmarks/README.md.
With o, it also gives how far c's final losses are from o's (what the change did to them).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from throughput import cpu_model, record  # benchmarks/: this script's own folder

from lstm_lightning import results, sweep
from lstm_lightning import workers as pool
from lstm_lightning.files import write_atomic
from lstm_lightning.runs import Run

ROOT = Path(__file__).resolve().parent.parent
GOAL = 2.5  # a / c: the automatic sweep at least this much faster than the shell loop
WAYS = {
    "a": "one `cli.py fit` process per run",
    "b": "`cli.py sweep --workers 1`",
    "c": "`cli.py sweep`",
    "o": "`cli.py sweep` of the code before",
}
# --edge: a sweep reaching the saturating edge, on the text corpus (issue 13.4).
EDGE = {"definitions": "benchmarks/edge_sweep.py", "config": "configs/sweep_stdlib.yaml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiments", help="cli.py sweep --experiments (default: EXPERIMENTS)")
    p.add_argument("--labels", help="cli.py sweep --labels: only these runs (a smoke test)")
    p.add_argument("--definitions", help="cli.py sweep --definitions")
    p.add_argument("--config", help="cli.py sweep --config (default: configs/sweep.yaml)")
    p.add_argument("--workers", default="auto", help="c's --workers (default auto)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each way (median)")
    p.add_argument("--ways", help="which of a, b, c (and o) to time (default all)")
    p.add_argument("--edge", action="store_true", help="the sweep of benchmarks/edge_sweep.py")
    p.add_argument("--before", help="o: the checkout whose cli.py is the code before")
    p.add_argument("--record", action="store_true", help="write the result into README.md")
    p.add_argument("--note", help="a line recorded with the result")
    args = p.parse_args(argv)
    args.ways = args.ways or ("abco" if args.before else "abc")
    if args.repeats < 1 or not args.ways or set(args.ways) - set(WAYS):
        p.error("--repeats must be at least 1 and --ways a subset of abco")
    if ("o" in args.ways) != bool(args.before):
        p.error("way o is the code of --before DIR: give both or neither")
    if args.before and not (Path(args.before) / "cli.py").is_file():
        p.error(f"--before: {args.before} has no cli.py; name a checkout of this project")
    for key, value in EDGE.items() if args.edge else ():
        setattr(args, key, getattr(args, key) or value)
    return args


def selection(args: argparse.Namespace) -> list[str]:
    """The sweep flags that pick the runs, as given."""
    flags = []
    for name in ("experiments", "labels", "definitions", "config"):
        if getattr(args, name):
            flags += [f"--{name}", getattr(args, name)]
    return flags


def planned(args: argparse.Namespace, runs_dir: Path) -> list[Run]:
    """The runs of the selection, resolved as the sweep resolves them into ``runs_dir``."""
    chosen = sweep.Selection(
        experiments=args.experiments,
        labels=args.labels,
        definitions=args.definitions,
        config=args.config,
        runs_dir=str(runs_dir),
    )
    runs, _, _ = sweep.prepare(chosen)
    return runs


# --- the three ways ------------------------------------------------------------------------


def shell_loop(args: argparse.Namespace, runs_dir: Path) -> float:
    """a: write each run's config.yaml as the sweep writes it, then time one ``cli.py fit``
    process per run. Each gets the torch threads the sweep would give the run (as
    OMP_NUM_THREADS), so that only the process per run differs."""
    runs = planned(args, runs_dir)
    cap = pool.thread_cap(pool.available_cores())
    for run in runs:
        write_atomic(run.dir / "config.yaml", run.text)
    start = time.perf_counter()
    for run in runs:
        threads = pool.threads_for(run.work, cap)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        command = [sys.executable, "cli.py", "fit", "--config", str(run.dir / "config.yaml")]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"a: {run.name} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def sweep_command(
    args: argparse.Namespace, runs_dir: Path, workers: str, code: Path = ROOT
) -> tuple[float, int]:
    """b, c and o: one ``cli.py sweep`` process of ``code``'s checkout, run from here,
    timed from start to exit; and the worker processes it started (its first line says;
    none: it ran the runs itself)."""
    cli = str(Path(code).resolve() / "cli.py")
    command = [sys.executable, cli, "sweep", *selection(args), "--runs_dir", str(runs_dir)]
    env = {**os.environ, "PYTHONPATH": str(Path(code).resolve())}
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--workers", workers], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"cli.py sweep --workers {workers} failed:\n{done.stderr[-3000:]}")
    started = re.search(r"(\d+) worker process", done.stderr)
    return seconds, int(started.group(1)) if started else 1


def time_way(args: argparse.Namespace, way: str, runs_dir: Path) -> tuple[float, int]:
    """Wall seconds, and how many runs trained at once."""
    if way == "a":
        return shell_loop(args, runs_dir), 1
    if way == "o":
        return sweep_command(args, runs_dir, args.workers, Path(args.before))
    return sweep_command(args, runs_dir, "1" if way == "b" else args.workers)


# --- the same work ---------------------------------------------------------------------------


def final_val_loss(run_dir: Path) -> float | None:
    """The last val/loss a run logged, from its TensorBoard events (a writes no result)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars("val/loss")[-1].value if "val/loss" in events.Tags()["scalars"] else None


def same_work(args: argparse.Namespace, dirs: dict[str, Path]) -> list[str]:
    """What differs between the ways: b and c must give identical result.json metrics, and
    a must end every run at b's (or c's) final val/loss."""
    reference = dirs.get("b") or dirs.get("c")
    if reference is None:
        return []
    problems = []
    for run in planned(args, reference):
        ref = results.read(run.dir / results.FILE)["metrics"]
        if "c" in dirs and "b" in dirs:
            other = results.read(dirs["c"] / run.group / run.label / results.FILE)["metrics"]
            if other != ref:
                problems.append(f"{run.name}: b {ref} != c {other}")
        if "a" in dirs:
            loss = final_val_loss(dirs["a"] / run.group / run.label)
            if loss is None or not math.isclose(loss, ref["val/loss"], rel_tol=1e-6):
                problems.append(f"{run.name}: a val/loss {loss} != {ref['val/loss']}")
    return problems


def before_after(args: argparse.Namespace, dirs: dict[str, Path]) -> list[float]:
    """|c's final val/loss - o's| for every run, where both have one (o and c only)."""
    if "o" not in dirs or "c" not in dirs:
        return []
    gaps = []
    for run in planned(args, dirs["c"]):
        old, new = (
            results.read(dirs[w] / run.group / run.label / results.FILE)["metrics"]["val/loss"]
            for w in "oc"
        )
        if old is not None and new is not None:
            gaps.append(abs(new - old))
    return gaps


# --- reporting -------------------------------------------------------------------------------


def table(args: argparse.Namespace, seconds: dict[str, list[float]], workers: int) -> str:
    c = statistics.median(seconds["c"]) if "c" in seconds else None
    lines = ["| way | what | median s | min–max s | / c |", "|:--|:--|--:|--:|--:|"]
    for way, times in seconds.items():
        what = WAYS[way]
        if way == "c":
            what += f" (--workers {args.workers}: {workers} at once)"
        median = statistics.median(times)
        ratio = f"{median / c:.2f}" if c else "–"
        lines.append(
            f"| {way} | {what} | {median:.1f} | {min(times):.1f}–{max(times):.1f} | {ratio} |"
        )
    if c and "a" in seconds:
        ratio = statistics.median(seconds["a"]) / c
        verdict = "met" if ratio >= GOAL else "missed"
        lines += ["", f"a / c = {ratio:.2f} (goal ≥ {GOAL}: {verdict})"]
        if "b" in seconds:
            lines[-1] += f"; b / c = {statistics.median(seconds['b']) / c:.2f}"
    if c and "o" in seconds:
        lines += ["", f"o / c = {statistics.median(seconds['o']) / c:.2f} (before / after)"]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    flags = [*selection(args), "--workers", args.workers, "--repeats", str(args.repeats)]
    if args.before:
        flags += ["--before", args.before]
    if args.ways != ("abco" if args.before else "abc"):
        flags += ["--ways", args.ways]
    return " ".join(["python benchmarks/sweep.py", *flags])


def report(args, seconds, runs: int, workers: int, problems: list[str], load, gaps=()) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cores = pool.available_cores()
    lines = [
        f"**{when}** — sweep wall time; {cpu_model()}, {cores} cores; torch "
        f"{torch.__version__}, lightning {L.__version__}",
        "",
        f"`{command_line(args)}`: {runs} runs, median of {args.repeats} repeat(s). "
        f"Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after.",
    ]
    if args.note:
        lines += ["", args.note]
    check = "Every way ended every run at the same loss (same work)."
    if problems:
        check = "WARNING: the ways differ: " + "; ".join(problems[:5])
    lines += ["", table(args, seconds, workers), "", check]
    if gaps:
        lines[-1] += (
            f" o against c: final val/loss differs by at most {max(gaps):.3g} "
            f"({sum(g > 0 for g in gaps)} of {len(gaps)} runs differ)."
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = len(planned(args, Path(tempfile.gettempdir()) / "unused"))  # validates the selection
    seconds: dict[str, list[float]] = {way: [] for way in "abco" if way in args.ways}
    problems: list[str] = []
    gaps: list[float] = []
    workers = 1  # c's runs at once
    load = os.getloadavg()[0]
    for r in range(args.repeats):
        # Alternate the order, so that a drift in machine load hits every way.
        order = list(seconds) if r % 2 == 0 else list(reversed(seconds))
        with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
            dirs = {way: Path(tmp) / way for way in order}
            for way in order:
                wall, at_once = time_way(args, way, dirs[way])
                seconds[way].append(wall)
                workers = at_once if way == "c" else workers
                log(f"repeat {r + 1}/{args.repeats} {way}: {seconds[way][-1]:.1f} s")
            problems += same_work(args, dirs)
            gaps += before_after(args, dirs)
    block = report(args, seconds, runs, workers, problems, (load, os.getloadavg()[0]), gaps)
    print(block)
    if args.record:
        selection_key = " ".join(selection(args)) or "default"
        record(block, f"sweep {cpu_model()} x{pool.available_cores()} {selection_key}")
        log("recorded in benchmarks/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
