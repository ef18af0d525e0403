"""Instructions a training step executes: ``python cli.py fit`` against the minimal loop,
counted by valgrind (cachegrind), so the ratio does not move with the machine's load.

    python scripts/stdlib_corpus.py                        # writes data/stdlib.txt first
    python benchmarks/instructions.py                      # width 16; ~15 min on one core
    python benchmarks/instructions.py --widths 16 --top 25 # where the fit's extra ones go
    python benchmarks/instructions.py --record             # also into benchmarks/README.md

Why: on a shared VM, identical back-to-back processes differ by 10-30 % in time
(benchmarks/README.md), more than the 5 % the goal is about. Instruction counts of a
deterministic program repeat to a few parts in ten thousand under any load. They are not
time: a cache miss or a slow divide counts one instruction. So this benchmark says where
the fit does *more work* than the minimal loop, and ``fit_process.py`` says what that
costs in seconds on the day.

As ``fit_process.py``: whole processes of N and N + D steps, (count(N + D) - count(N)) / D,
so start-up and the end of the fit cancel. The fit is ``cli.py fit`` with
``configs/lstm.yaml`` on the text file, validation off; the minimal loop is
``throughput.time_minimal`` (nanoGPT's loop, the same corpus, optimizer and schedule) in
a process of its own. ``PYTHONHASHSEED=0`` and one thread make both deterministic.
Under valgrind, torch may choose other CPU kernels than natively (valgrind does not
emulate AVX-512); both sides run the same ones.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import fit_process as fp  # benchmarks/ is on sys.path when this script runs
import throughput as tp

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--widths", default="16", help="comma-separated hidden sizes")
    p.add_argument("--base", type=int, default=100, help="N: steps of the shorter process")
    p.add_argument("--extra", type=int, default=400, help="D: the longer one's extra steps")
    p.add_argument("--text", default=str(ROOT / "data" / "stdlib.txt"), help="data.path")
    p.add_argument("--top", type=int, default=0, help="list the N functions the fit spends most on")
    p.add_argument("--record", action="store_true", help=f"write the table into {tp.README}")
    p.add_argument("--note", default="", help="a line recorded with the table")
    p.add_argument("--minimal_steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    args.threads, args.code = 1, str(ROOT)  # what fp.fit_args reads
    if args.base % 10 or args.extra % 10:
        p.error("--base and --extra must be multiples of 10 (the fit's K on a text file)")
    if not os.path.isfile(args.text):
        sys.exit(f"--text: {args.text} does not exist; run python scripts/stdlib_corpus.py")
    if args.minimal_steps is None and shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    return args


def run_minimal(args: argparse.Namespace) -> int:
    """The process the minimal side counts: build as fit_process does, then N steps."""
    flags = [*fp.fit_args(args, args.width), f"--trainer.max_steps={args.minimal_steps}"]
    sys.argv[1:] = []  # LightningCLI warns when it is given args and sees others here
    cli = tp.build_cli([*flags, "--trainer.logger=false"], run=False)
    tp.time_minimal(cli, 0, args.minimal_steps)
    return 0


def counted(command: list[str], out: Path) -> dict[tuple[str, str], int]:
    """Run ``command`` under cachegrind; its instructions per (file, function), and the
    total under the key ("", "")."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    done = subprocess.run([*valgrind, *command], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    text = out.read_text()
    counts: dict[tuple[str, str], int] = collections.Counter()
    where = ("?", "?")
    for line in text.splitlines():
        if line.startswith("fl="):
            where = (line[3:], where[1])
        elif line.startswith("fn="):
            where = (where[0], line[3:])
        elif line[:1].isdigit():
            counts[where] += int(line.split()[1])
    counts[("", "")] = int(SUMMARY.search(text).group(1))
    return counts


def per_step(args: argparse.Namespace, side: str, width: int, tmp: Path) -> dict:
    """(counts(N + D) - counts(N)) / D for one side, per function."""
    runs = {}
    for steps in (args.base, args.base + args.extra):
        if side == "fit":
            command = [sys.executable, "cli.py", "fit", *fp.fit_args(args, width)]
            command += ["--trainer.limit_val_batches=0", f"--trainer.max_steps={steps}"]
            command += [f"--trainer.logger.init_args.save_dir={tmp / f'runs{steps}'}"]
        else:
            command = [sys.executable, __file__, f"--minimal_steps={steps}", f"--width={width}"]
            command += [f"--text={args.text}"]
        runs[steps] = counted(command, tmp / f"{side}{width}_{steps}.out")
        tp.log(f"width {width} {side} {steps} steps: {runs[steps][('', '')]:,} instructions")
    short, long = runs[args.base], runs[args.base + args.extra]
    return {key: (long.get(key, 0) - short.get(key, 0)) / args.extra for key in long | short}


def report(args: argparse.Namespace, rows: list[tuple[int, dict, dict]]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f"python benchmarks/instructions.py --widths {','.join(map(str, args.widths))} "
        f"--base {args.base} --extra {args.extra}"
    )
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    lines = [
        f"**{when}** — {tp.machine(1)}; {version.strip()}",
        "",
        f"`{command}`: `cli.py fit` on {Path(args.text).name} against the minimal loop, "
        "instructions a training step (cachegrind), validation off.",
    ]
    if args.note:
        lines += ["", args.note]
    lines += [
        "",
        "| width | minimal instructions/step | fit instructions/step | minimal / fit | goal |",
        "|---:|---:|---:|---:|:---|",
    ]
    for width, minimal, fit in rows:
        m, f = minimal[("", "")], fit[("", "")]
        goal = tp.GOALS.get(width)
        verdict = "–" if goal is None else f"≥ {goal} {'met' if m / f >= goal else 'missed'}"
        lines.append(f"| {width} | {m:,.0f} | {f:,.0f} | {m / f:.3f} | {verdict} |")
    return "\n".join(lines)


def top(fit: dict, minimal: dict, n: int) -> str:
    """The functions whose instructions a step the fit exceeds the minimal loop by most."""
    keys = [k for k in fit.keys() | minimal.keys() if k != ("", "")]
    extra = sorted(keys, key=lambda k: fit.get(k, 0) - minimal.get(k, 0), reverse=True)
    lines = ["| fit − minimal | fit | minimal | function | file |", "|---:|---:|---:|---|---|"]
    for fl, fn in extra[:n]:
        f, m = fit.get((fl, fn), 0), minimal.get((fl, fn), 0)
        lines.append(f"| {f - m:,.0f} | {f:,.0f} | {m:,.0f} | `{fn[:60]}` | {Path(fl).name} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.minimal_steps is not None:
        return run_minimal(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            minimal = per_step(args, "minimal", width, Path(tmp))
            fit = per_step(args, "fit", width, Path(tmp))
            rows.append((width, minimal, fit))
    block = report(args, rows)
    print(block)
    for width, minimal, fit in rows if args.top else []:
        print(f"\nWidth {width}: the {args.top} functions with the most extra instructions\n")
        print(top(fit, minimal, args.top))
    if args.record:
        widths = ",".join(map(str, args.widths))
        tp.record(block, f"instructions {tp.cpu_model()} widths={widths}")
        tp.log(f"recorded in {tp.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
