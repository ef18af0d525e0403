"""A saturated run against a healthy run of the same shape, per step, subnormals flushed
(``model.flush_subnormals``, the default) and computed.

    python scripts/stdlib_corpus.py                   # data/stdlib.txt, once
    python benchmarks/saturation.py                   # width 256, lr 0.5 against 2^-6
    python benchmarks/saturation.py --record --note "quiet machine"   # also into README.md

Each case is a ``cli.py fit`` run (``build_cli`` on ``configs/sweep_stdlib.yaml``: muP,
Adam, the text corpus; constant learning rate, no validation) timed from inside by a
callback: the wall time per optimizer step over the steps after ``--warmup`` (a
saturating run saturates in its first steps, and from then on every step pays the same).
The four cases run interleaved, ``--repeats`` times; the table gives the median, and the
share of the first LSTM layer's outputs that are subnormal on a batch after training
(computed: what the CPU meets when it does not flush). Goal: a saturated step at most
1.5x a healthy one with subnormals flushed (issue 13).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from throughput import cpu_model, record  # benchmarks/: this script's own folder

from lstm_lightning import subnormal
from lstm_lightning.fit import build_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_stdlib.yaml"
GOAL = 1.5  # saturated / healthy seconds per step, subnormals flushed


class StepClock(Callback):
    """(global step, wall time) at the end of every training batch."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.marks.append((trainer.global_step, time.perf_counter()))

    def per_step(self, warmup: int) -> float:
        """Seconds per step from the first batch end at or past ``warmup`` to the last."""
        start = next(m for m in self.marks if m[0] >= warmup)
        end = self.marks[-1]
        return (end[1] - start[1]) / (end[0] - start[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--path", default="data/stdlib.txt", help="the text file (data.path)")
    p.add_argument("--width", type=int, default=256, help="model.hidden_size")
    p.add_argument("--saturated_lr", type=float, default=0.5, help="an lr that saturates")
    p.add_argument("--healthy_lr", type=float, default=2**-6, help="an lr that trains")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--steps", type=int, default=40, help="timed steps after the warm-up")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each case (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--record", action="store_true", help="write the result into README.md")
    p.add_argument("--note", help="a line recorded with the result")
    args = p.parse_args(argv)
    if not Path(args.path).is_file():
        p.error(f"--path: {args.path} is not a file; python scripts/stdlib_corpus.py writes it")
    return args


def time_case(args: argparse.Namespace, lr: float, flush: bool, root: str) -> tuple:
    """(seconds per step after the warm-up, the last training loss, ``subnormal_share``)
    of one run."""
    total = args.warmup + args.steps
    flags = {
        "config": str(CONFIG),
        "data.path": args.path,
        "model.hidden_size": args.width,
        "model.learning_rate": lr,
        "model.schedule": "constant",
        "model.warmup_steps": 0,
        "model.flush_subnormals": str(flush).lower(),
        "trainer.max_steps": total,
        "trainer.limit_val_batches": 0,
        "trainer.log_every_n_steps": total,
        "trainer.logger": "false",
        "trainer.default_root_dir": root,
        "checkpoint.dirpath": root,
    }
    cli = build_cli([a for k, v in flags.items() for a in (f"--{k}", str(v))], run=False)
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    share = subnormal_share(cli.model, next(iter(cli.datamodule.train_dataloader())))
    return clock.per_step(args.warmup), float(cli.model.last_train_loss), share


def subnormal_share(model, stack: torch.Tensor) -> float:
    """The share of the first LSTM layer's outputs (B, T, H) that are subnormal on a
    training batch, computed (not flushed): how saturated the trained run is."""
    batch = stack[0] if stack.dim() == 3 else stack  # (K, B, T+1) -> (B, T+1)
    out = []
    hook = model.net.layers[0].register_forward_hook(lambda m, a, r: out.append(r[0]))
    try:
        with torch.no_grad(), subnormal.flushed(False):
            model.net(batch[:, :-1])
            size = out[0].abs()
            return float(((size > 0) & (size < torch.finfo(torch.float32).tiny)).float().mean())
    finally:
        hook.remove()


def cpu_penalty(repeats: int = 20) -> float:
    """This CPU's slow path: seconds of x * 0.5 on 2^22 subnormal floats over the same on
    normal ones, computed (the 20x of issue 13 was on another machine's CPU)."""
    tiny, normal = subnormal.subnormals(1 << 22), torch.ones(1 << 22)
    best = {}
    with subnormal.flushed(False):
        for name, x in (("tiny", tiny), ("normal", normal)):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                x.mul(0.5)
                times.append(time.perf_counter() - start)
            best[name] = min(times)
    return best["tiny"] / best["normal"]


def cases(args: argparse.Namespace) -> dict[tuple[str, bool], float]:
    return {
        (name, flush): lr
        for name, lr in (("healthy", args.healthy_lr), ("saturated", args.saturated_lr))
        for flush in (True, False)
    }


def measure(args: argparse.Namespace, root: str) -> dict[tuple[str, bool], list[tuple]]:
    """Every case ``--repeats`` times, interleaved (the order reversed every other repeat)."""
    got: dict[tuple[str, bool], list[tuple]] = {case: [] for case in cases(args)}
    for r in range(args.repeats):
        order = list(cases(args).items())
        for (name, flush), lr in order if r % 2 == 0 else reversed(order):
            seconds, loss, share = time_case(args, lr, flush, root)
            got[name, flush].append((seconds, loss, share))
            flushed = "flushed" if flush else "computed"
            print(
                f"repeat {r + 1} {name} ({flushed}): {seconds * 1e3:.1f} ms/step", file=sys.stderr
            )
    return got


def table(args: argparse.Namespace, got: dict[tuple[str, bool], list[tuple]]) -> str:
    ms = {case: statistics.median(r[0] for r in runs) * 1e3 for case, runs in got.items()}
    lines = [
        "| run | lr | subnormals | ms / step (median) | min–max | last train loss | "
        "subnormal LSTM outputs |",
        "|:--|--:|:--|--:|--:|--:|--:|",
    ]
    for (name, flush), lr in cases(args).items():
        times = [r[0] * 1e3 for r in got[name, flush]]
        _, loss, share = got[name, flush][-1]
        lines.append(
            f"| {name} | {lr:g} | {'flushed' if flush else 'computed'} | {ms[name, flush]:.1f} "
            f"| {min(times):.1f}–{max(times):.1f} | {loss:.3f} | {share:.2%} |"
        )
    on = ms["saturated", True] / ms["healthy", True]
    off = ms["saturated", False] / ms["healthy", False]
    verdict = "met" if on <= GOAL else "missed"
    lines += [
        "",
        f"saturated / healthy per step: {on:.2f} flushed (goal ≤ {GOAL}: {verdict}), "
        f"{off:.2f} computed; a saturated step computed / flushed: "
        f"{ms['saturated', False] / ms['saturated', True]:.1f}",
    ]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    return (
        f"python benchmarks/saturation.py --path {args.path} --width {args.width} "
        f"--saturated_lr {args.saturated_lr:g} --healthy_lr {args.healthy_lr:g} "
        f"--warmup {args.warmup} --steps {args.steps} --repeats {args.repeats} "
        f"--threads {args.threads}"
    )


def report(args: argparse.Namespace, got, load: tuple[float, float], penalty: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"**{when}** — saturated against healthy runs; {cpu_model()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, lightning {L.__version__}; {args.threads} thread(s)",
        "",
        f"`{command_line(args)}`: muP Adam, batch 32 x 64, median of {args.repeats}. "
        f"Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after. This CPU's "
        f"slow path: a multiply on subnormal floats takes {penalty:.1f}x one on normal "
        "floats (computed; best of 20).",
    ]
    if args.note:
        lines += ["", args.note]
    return "\n".join([*lines, "", table(args, got)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="saturation-") as root:
        got = measure(args, root)
    block = report(args, got, (load, os.getloadavg()[0]), cpu_penalty())
    print(block)
    if args.record:
        record(block, f"saturation {cpu_model()} x{os.cpu_count()} width={args.width}")
        print("recorded in benchmarks/README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
