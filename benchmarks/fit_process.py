"""Per-step time of ``python cli.py fit`` as a user sees it: whole processes of N and
N + D steps on a text file, (time(N + D) - time(N)) / D, so that start-up and the end of
the fit cancel out; against the minimal loop of ``throughput.py`` on the same corpus.

    python scripts/stdlib_corpus.py                     # writes data/stdlib.txt first
    python benchmarks/fit_process.py                    # widths 16 and 512, 3 repeats
    python benchmarks/fit_process.py --widths 16 --repeats 1 --validate   # a quick check
    python benchmarks/fit_process.py --code /path/to/old/checkout         # older code
    python benchmarks/fit_process.py --record --note "quiet machine"      # also README.md

The processes run ``configs/lstm.yaml`` on the text file with the width under test and
validation off (``--trainer.limit_val_batches 0``): the rule is in benchmarks/README.md.
``--validate`` adds processes with the config's validation (every 250 steps, the whole
validation split) and a column for what it costs a training step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import throughput as tp  # benchmarks/ is on sys.path when this script runs
import torch

ROOT = Path(__file__).resolve().parent.parent
TOKENS_PER_STEP = 32 * 64  # configs/lstm.yaml: batch_size x seq_len


@dataclass
class Width:
    width: int
    base: int
    extra: int
    minimal: list[float] = field(default_factory=list)  # seconds a step
    fit: list[float] = field(default_factory=list)
    validated: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--widths", default="16,512", help="comma-separated hidden sizes")
    p.add_argument("--base", type=int, default=100, help="N: steps of the shorter process")
    p.add_argument(
        "--extra",
        default=None,
        help="D: the longer process's extra steps, one number or one per width "
        "(default 2000 at width <= 32, 400 at <= 128, 200 above)",
    )
    p.add_argument("--text", default=str(ROOT / "data" / "stdlib.txt"), help="data.path")
    p.add_argument("--code", default=str(ROOT), help="the checkout whose cli.py runs")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and torch threads")
    p.add_argument("--clock", default="cpu", choices=sorted(tp.CLOCKS), help="as throughput.py")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--validate", action="store_true", help="also time the config's validation")
    p.add_argument("--record", action="store_true", help=f"write the table into {tp.README}")
    p.add_argument("--note", default="", help="a line recorded with the table")
    args = p.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    if args.extra is None:
        args.extra = [2000 if w <= 32 else 400 if w <= 128 else 200 for w in args.widths]
    else:
        args.extra = tp.per_width_steps(args.extra, args.widths)
    if not os.path.isfile(args.text):
        sys.exit(f"--text: {args.text} does not exist; run python scripts/stdlib_corpus.py")
    return args


def fit_args(args: argparse.Namespace, width: int) -> list[str]:
    return [
        f"--config={ROOT / 'configs' / 'lstm.yaml'}",
        "--data.source=text",
        f"--data.path={args.text}",
        f"--model.hidden_size={width}",
    ]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit_seconds(args: argparse.Namespace, width: int, steps: int, validate: bool) -> float:
    """One ``cli.py fit`` process of ``steps`` steps: its CPU time (all its threads) or
    its wall time, start-up and exit included."""
    extra = [] if validate else ["--trainer.limit_val_batches=0"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=args.code)
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "cli.py", "fit", *fit_args(args, width), *extra]
        command += [f"--trainer.max_steps={steps}", f"--trainer.logger.init_args.save_dir={runs}"]
        cpu, wall = children_cpu(), time.perf_counter()
        done = subprocess.run(command, cwd=args.code, env=env, capture_output=True, text=True)
        cpu, wall = children_cpu() - cpu, time.perf_counter() - wall
    if done.returncode != 0:
        sys.exit(f"cli.py fit failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return cpu if args.clock == "cpu" else wall


def per_step(args: argparse.Namespace, res: Width, validate: bool, first_long: bool) -> float:
    """(time(N + D) - time(N)) / D, the two processes in the order given."""
    steps = [res.base + res.extra, res.base] if first_long else [res.base, res.base + res.extra]
    seconds = {n: fit_seconds(args, res.width, n, validate) for n in steps}
    return (seconds[res.base + res.extra] - seconds[res.base]) / res.extra


def minimal_per_step(args: argparse.Namespace, res: Width) -> float:
    """The minimal loop on the same corpus, optimizer and schedule: D steps after a
    warm-up of D / 10 (5 to 50)."""
    flags = [*fit_args(args, res.width), f"--trainer.max_steps={res.base + res.extra}"]
    cli = tp.build_cli([*flags, "--trainer.logger=false"], run=False)
    warmup = min(50, max(5, res.extra // 10))
    return tp.time_minimal(cli, warmup, res.extra).seconds / res.extra


def measure(args: argparse.Namespace, width: int, extra: int) -> Width:
    """Repeats rotate the order of the sides so that a drift in load hits each."""
    res = Width(width, args.base, extra)
    sides = ["minimal", "fit", "validated"] if args.validate else ["minimal", "fit"]
    for r in range(args.repeats):
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            if side == "minimal":
                value = minimal_per_step(args, res)
            else:
                value = per_step(args, res, side == "validated", first_long=r % 2 == 1)
            getattr(res, side).append(value)
            tp.log(f"width {width} repeat {r + 1}/{args.repeats} {side}: {value * 1e3:.3f} ms/step")
    return res


def table(results: list[Width], validate: bool) -> str:
    head = "| width | steps N → N+D | minimal tok/s | minimal ms/step | fit ms/step "
    head += "| fit / minimal | min–max |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|"
    if validate:
        head += " fit with validation ms/step | its ratio |"
        rule += "---:|---:|"
    lines = [head + " goal |", rule + ":---|"]
    for res in results:
        m, f = statistics.median(res.minimal), statistics.median(res.fit)
        ratios = [a / b for a, b in zip(res.minimal, res.fit)]
        row = (
            f"| {res.width} | {res.base} → {res.base + res.extra} | {TOKENS_PER_STEP / m:,.0f} "
            f"| {m * 1e3:.3f} | {f * 1e3:.3f} | {m / f:.3f} "
            f"| {min(ratios):.3f}–{max(ratios):.3f} |"
        )
        if validate:
            v = statistics.median(res.validated)
            row += f" {v * 1e3:.3f} | {m / v:.3f} |"
        goal = tp.GOALS.get(res.width)
        verdict = "–" if goal is None else f"≥ {goal} {'met' if m / f >= goal else 'missed'}"
        lines.append(f"{row} {verdict} |")
    return "\n".join(lines)


def report(args: argparse.Namespace, results: list[Width], load: tuple[float, float]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f"python benchmarks/fit_process.py --widths {','.join(map(str, args.widths))} "
        f"--base {args.base} --extra {','.join(map(str, args.extra))} --threads {args.threads} "
        f"--clock {args.clock} --repeats {args.repeats}" + (" --validate" if args.validate else "")
    )
    code = "this checkout" if Path(args.code).resolve() == ROOT else f"code from {args.code}"
    lines = [
        f"**{when}** — {tp.machine(args.threads)}; {code}",
        "",
        f"`{command}`: `cli.py fit` on {Path(args.text).name}, median of {args.repeats} "
        f"repeat(s), {args.clock} time. Load average (1 min) {load[0]:.2f} before, "
        f"{load[1]:.2f} after.",
    ]
    if args.note:
        lines += ["", args.note]
    return "\n".join([*lines, "", table(results, args.validate)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tp.clock = tp.CLOCKS[args.clock]
    tp.quiet_lightning()
    load_before = os.getloadavg()[0]
    results = [measure(args, w, d) for w, d in zip(args.widths, args.extra)]
    block = report(args, results, (load_before, os.getloadavg()[0]))
    print(block)
    if args.record:
        widths = ",".join(map(str, args.widths))
        code = "" if Path(args.code).resolve() == ROOT else f" code={Path(args.code).name}"
        tp.record(block, f"process {tp.cpu_model()} x{os.cpu_count()} widths={widths}{code}")
        tp.log(f"recorded in {tp.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
