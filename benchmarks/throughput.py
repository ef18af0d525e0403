"""Training throughput: Lightning ``Trainer.fit`` (the ``cli.py fit`` path) and a plain
PyTorch loop on the project's model and data, against the minimal loop a user would write
(the reference), on the same corpus and thread count.

    python benchmarks/throughput.py                              # widths 16,128,512, 3 repeats
    python benchmarks/throughput.py --widths 16 --steps 200 --repeats 1   # a quick check
    python benchmarks/throughput.py --record --note "quiet machine"       # also into README.md

Each measurement builds the model, data module and trainer through ``build_cli`` (so through
``configs/lstm.yaml`` and the CLI's defaults: TensorBoard logger, ModelCheckpoint save_last,
progress bar refreshing every 20 steps). fit calls ``trainer.fit``; plain trains
``model.net`` with the optimizer and schedule of ``configure_optimizers``, on the same
DataLoader; minimal is nanoGPT's loop (random windows of the train split as one tensor,
``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear``, Adam with the same per-group learning
rates and schedule) from the same initial weights. All time the same span of steps, on
the process's CPU time by default (``--clock``); see benchmarks/README.md for the rules.
The Markdown table goes to stdout; the progress bar and warnings go to stderr.

A Lightning batch holds K = ``data.steps_per_batch`` optimizer steps. ``--steps_per_batch``
defaults to the K that ``cli.py fit --config configs/lstm.yaml`` resolves; steps and warm-up
are rounded up to multiples of K, and the plain loop takes its steps from the same stacks.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import functools
import logging
import math
import os
import platform
import pstats
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lstm_lightning.fit import build_cli
from lstm_lightning.module import make_optimizer
from lstm_lightning.schedule import lr_factor

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
CONFIG = ROOT / "configs" / "lstm.yaml"
DEFAULT_SYNTHETIC_TOKENS = 1_048_576  # SequenceDataModule's default
TRAIN_SHARE = 0.9  # 1 - val_fraction - test_fraction (the data module's defaults)
GOALS = {16: 0.95, 512: 0.98}  # width -> the fit / minimal ratio we aim for
SIDES = ("minimal", "plain", "lightning")
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]  # set from --clock in main


@dataclass
class Run:
    """One timed measurement: seconds for ``steps`` steps and the loss of the last one."""

    seconds: float
    loss: float

    def tokens_per_s(self, steps: int, tokens_per_step: int) -> float:
        return steps * tokens_per_step / self.seconds


@dataclass
class WidthResult:
    width: int
    steps: int
    warmup: int
    plain: list[Run]
    lightning: list[Run]
    minimal: list[Run]


# --- options ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--widths", default="16,128,512", help="comma-separated hidden sizes")
    p.add_argument(
        "--steps",
        default=None,
        help="timed steps: one number, or one per width (comma-separated); "
        "default per width, ~10-20 s per measurement on one core",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default: steps // 10, >= 5)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=3, help="measurements per side and width")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"])
    p.add_argument(
        "--steps_per_batch",
        default="auto",
        help="data.steps_per_batch K (default: the K cli.py fit --config configs/lstm.yaml uses)",
    )
    p.add_argument(
        "--clock",
        default="cpu",
        choices=sorted(CLOCKS),
        help="cpu: the process's CPU time (all its threads), blind to other processes "
        "taking the cores of a shared machine; wall: elapsed time",
    )
    p.add_argument("--record", action="store_true", help=f"write the table into {README}")
    p.add_argument("--note", default="", help="a line recorded with the table (e.g. machine load)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead of the table: cProfile the timed span of one Lightning run and one "
        "plain run at the first width; print the top N functions of each, by own time "
        "and by cumulative time",
    )
    args = p.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    args.steps = per_width_steps(args.steps, args.widths)
    if min(args.steps) < 1 or args.repeats < 1 or (args.warmup or 0) < 0:
        p.error("--steps and --repeats must be at least 1, --warmup at least 0")
    k = config_steps_per_batch() if args.steps_per_batch == "auto" else int(args.steps_per_batch)
    args.steps_per_batch = k
    args.steps = [round_up(s, k) for s in args.steps]
    return args


def config_steps_per_batch() -> int:
    """The K (``data.steps_per_batch``) that ``cli.py fit --config configs/lstm.yaml`` uses."""
    cli = build_cli([f"--config={CONFIG}", "--trainer.logger=false"], run=False)
    return cli.datamodule.steps_per_batch


def round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def default_steps(width: int) -> int:
    """Steps for ~10-20 s per measurement on one loaded core (measured there: ~7 ms a step
    at width 16, ~45 ms at 128, ~0.7 s at 512)."""
    if width <= 32:
        return 1500
    if width <= 128:
        return 300
    return max(10, round(20 * (512 / width) ** 2))


def per_width_steps(steps: str | None, widths: list[int]) -> list[int]:
    if steps is None:
        return [default_steps(w) for w in widths]
    values = [int(s) for s in steps.split(",")]
    if len(values) == 1:
        return values * len(widths)
    if len(values) != len(widths):
        sys.exit(f"--steps: give one number or one per width ({len(widths)}), got {steps}")
    return values


def warmup_for(args: argparse.Namespace, steps: int) -> int:
    warmup = args.warmup if args.warmup is not None else max(5, steps // 10)
    return round_up(warmup, args.steps_per_batch)


# --- building --------------------------------------------------------------------------


def build(args: argparse.Namespace, width: int, max_steps: int, log_dir: str):
    """Model, data module and trainer exactly as ``cli.py fit --config configs/lstm.yaml``
    builds them, with the width and optimizer under test, a temporary log directory and
    validation off (the plain loop does none). The CLI seeds everything with 0 first, so
    every measurement starts from the same weights and sees the same batches."""
    # A run must stay inside one epoch: an epoch end saves last.ckpt (validation is off).
    needed = (max_steps + 2) * args.batch_size * (args.seq_len + 1) / TRAIN_SHARE
    tokens = max(DEFAULT_SYNTHETIC_TOKENS, math.ceil(needed))
    k = args.steps_per_batch
    cli = build_cli(
        [
            f"--config={CONFIG}",
            f"--model.hidden_size={width}",
            f"--model.optimizer={args.optimizer}",
            "--data.source=synthetic",
            f"--data.batch_size={args.batch_size}",
            f"--data.seq_len={args.seq_len}",
            f"--data.synthetic_tokens={tokens}",
            f"--data.steps_per_batch={k}",
            f"--trainer.max_steps={max_steps}",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            f"--trainer.log_every_n_steps={round_up(50, k)}",  # the config's 50, if K divides it
            f"--trainer.logger.init_args.save_dir={log_dir}",
        ],
        run=False,
    )
    steps = cli.datamodule.train_steps_per_epoch()
    if steps < max_steps:
        raise RuntimeError(f"an epoch has {steps} steps, fewer than the {max_steps} needed")
    return cli


# --- the plain loop --------------------------------------------------------------------


def plain_optimizer(model: L.LightningModule, total_steps: int):
    """The optimizer and LR scheduler ``configure_optimizers`` builds."""
    return make_optimizer(model.hparams, model.net, model.shapes, total_steps)


def time_plain(cli, warmup: int, steps: int, profiler: cProfile.Profile | None = None) -> Run:
    """Train ``model.net`` for warmup + steps steps; time from just after fetching the stack
    of step ``warmup`` to just after fetching the stack of step ``warmup + steps``: the span
    the Lightning callback sees (it fires after the fetch), with ``steps`` steps and the
    fetches of their stacks (K steps each, K = ``data.steps_per_batch``)."""
    model, net = cli.model, cli.model.net
    net.train()
    optimizer, scheduler = plain_optimizer(model, cli.trainer.max_steps)
    k = cli.datamodule.steps_per_batch
    stacks = iter(cli.datamodule.train_dataloader())
    start = loss = None
    for i in range((warmup + steps) // k + 1):
        stack = next(stacks)  # (K, B, T+1)
        if i == warmup // k:
            start = clock()
            if profiler:
                profiler.enable()
        if i == (warmup + steps) // k:
            break
        for batch in stack:  # (B, T+1)
            optimizer.zero_grad()
            logits, _ = net(batch[:, :-1])  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            loss.backward()
            optimizer.step()
            scheduler.step()  # the module's schedule steps every step ("interval": "step")
    end = clock()
    if profiler:
        profiler.disable()
    return Run(end - start, loss.item())


# --- the minimal loop: the reference ---------------------------------------------------


class Minimal(torch.nn.Module):
    """The network a user writes: embedding -> LSTM -> readout, no multipliers."""

    def __init__(self, vocab: int, embedding: int, hidden: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, embedding)
        self.lstm = torch.nn.LSTM(embedding, hidden, batch_first=True)
        self.readout = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, _ = self.lstm(self.embedding(tokens))  # (B, T, H)
        return self.readout(x)  # (B, T, V)


def minimal_setup(cli):
    """The minimal loop's corpus (the train split as one int64 tensor), network and
    optimizer: Adam with the project's per-group learning rates and LambdaLR schedule.

    The network starts as the project's: its weights, with muP's multipliers folded in
    (the readout's 1/m into the readout weight), so it computes the same logits. Adam's
    update does not depend on a weight's scale, so a weight folded by c trains as the
    original with its learning rate times c: the minimal loop follows the project's
    run without the multipliers' ops (``--optimizer adam``, the default)."""
    model, net = cli.model, cli.model.net
    data = torch.as_tensor(cli.datamodule.corpus.train, dtype=torch.int64)  # (N,)
    lstm = net.layers[0]
    mini = Minimal(net.embedding.num_embeddings, lstm.input_size, lstm.hidden_size)
    folded = {net.embedding.weight: net.embedding_mult, net.readout.weight: net.output_mult}
    with torch.no_grad():
        mini.embedding.weight.copy_(net.embedding.weight * net.embedding_mult)
        for name, p in mini.lstm.named_parameters():
            p.copy_(getattr(lstm, name))
        mini.readout.weight.copy_(net.readout.weight * net.output_mult)
        mini.readout.bias.copy_(net.readout.bias)
    # initial_lr: LambdaLR has already scaled lr by the schedule's first factor
    theirs, _ = plain_optimizer(model, cli.trainer.max_steps)
    twin = dict(zip(net.parameters(), mini.parameters()))  # same order, same shapes
    by_lr: dict[float, list] = {}
    for group in theirs.param_groups:
        for p in group["params"]:
            by_lr.setdefault(group["initial_lr"] * folded.get(p, 1.0), []).append(twin[p])
    groups = [{"params": params, "lr": lr} for lr, params in by_lr.items()]
    optimizer = torch.optim.Adam(groups, betas=model.hparams.betas, eps=model.hparams.eps)
    hp = model.hparams
    factor = functools.partial(
        lr_factor,
        schedule=hp.schedule,
        warmup_steps=hp.warmup_steps,
        total_steps=cli.trainer.max_steps,
    )
    return data, mini, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def time_minimal(cli, warmup: int, steps: int, profiler: cProfile.Profile | None = None) -> Run:
    """nanoGPT's loop: random windows of the in-memory corpus, stacked; forward, loss,
    zero_grad(set_to_none), backward, Adam step, schedule step; nothing else. Timed from
    the first batch fetch after ``warmup`` steps to the fetch after the last timed one."""
    data, net, optimizer, scheduler = minimal_setup(cli)
    batch_size, seq_len = cli.datamodule.hparams.batch_size, cli.datamodule.hparams.seq_len
    net.train()
    start = loss = None
    for i in range(warmup + steps):
        if i == warmup:
            start = clock()
            if profiler:
                profiler.enable()
        ix = torch.randint(len(data) - seq_len - 1, (batch_size,))
        batch = torch.stack([data[j : j + seq_len + 1] for j in ix])  # (B, T+1)
        logits = net(batch[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    ix = torch.randint(len(data) - seq_len - 1, (batch_size,))  # the fetch after the last
    torch.stack([data[j : j + seq_len + 1] for j in ix])
    end = clock()
    if profiler:
        profiler.disable()
    return Run(end - start, loss.item())


# --- the Lightning side ----------------------------------------------------------------


class SpanTimer(Callback):
    """Times steps [warmup, warmup + steps) from the ``on_train_batch_start`` of the first
    Lightning batch (a stack of K steps) to that of the one after the last. Start to start,
    so each timed batch includes all that Lightning does after ``on_train_batch_end``
    (logger flush every ``log_every_n_steps``, progress-bar metrics); the fit therefore
    runs one extra batch. Placed first in the callback list, so the other callbacks' start
    hooks fall inside."""

    def __init__(
        self, warmup: int, steps: int, k: int = 1, profiler: cProfile.Profile | None = None
    ):
        self.first, self.stop = warmup // k, (warmup + steps) // k
        self.profiler = profiler
        self.start = self.end = None
        self.loss = None  # the loss of the last timed step, to check both sides did the same

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.first:
            self.start = clock()
            if self.profiler:
                self.profiler.enable()
        elif batch_idx == self.stop:
            self.end = clock()
            if self.profiler:
                self.profiler.disable()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.stop - 1:
            self.loss = outputs["loss"]


def time_lightning(cli, warmup: int, steps: int, profiler: cProfile.Profile | None = None) -> Run:
    timer = SpanTimer(warmup, steps, cli.datamodule.steps_per_batch, profiler)
    cli.trainer.callbacks.insert(0, timer)
    # Lightning's progress bar writes to stdout; send it to stderr so stdout holds only
    # the table. The bar's cost is the same on either stream (tqdm flushes every redraw).
    with contextlib.redirect_stdout(sys.stderr):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if cli.model.diverged_at_step is not None:
        raise RuntimeError(f"training diverged at step {cli.model.diverged_at_step}")
    if timer.end is None:
        raise RuntimeError("the fit stopped before the end of the timed span")
    return Run(timer.end - timer.start, timer.loss.item())


# --- measuring -------------------------------------------------------------------------


def measure(args: argparse.Namespace, side: str, width: int, warmup: int, steps: int) -> Run:
    """One fresh build and one timed run of ``side`` ("minimal", "plain" or "lightning")."""
    with tempfile.TemporaryDirectory() as log_dir:
        cli = build(args, width, warmup + steps + args.steps_per_batch, log_dir)
        timed = {"minimal": time_minimal, "plain": time_plain, "lightning": time_lightning}[side]
        return timed(cli, warmup, steps)


def measure_width(args: argparse.Namespace, width: int, steps: int) -> WidthResult:
    """Rotate the order of the sides from repeat to repeat (minimal, plain, Lightning; then
    plain, Lightning, minimal; ...) so that a drift in machine load hits all three."""
    warmup = warmup_for(args, steps)
    result = WidthResult(width, steps, warmup, [], [], [])
    for r in range(args.repeats):
        order = SIDES[r % 3 :] + SIDES[: r % 3]
        for side in order:
            run = measure(args, side, width, warmup, steps)
            getattr(result, side).append(run)
            log(f"width {width} repeat {r + 1}/{args.repeats} {side}: {run.seconds:.2f} s")
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- reporting -------------------------------------------------------------------------


def table(results: list[WidthResult], tokens_per_step: int) -> str:
    """Markdown: median tok/s per side; fit / minimal and plain / minimal (medians, and the
    min-max of the per-repeat ratios: each run over the minimal run of the same repeat);
    fit's overhead per step over the minimal loop. The minimal loop's tok/s is the
    machine's own speed: it tells rows from different machines apart."""
    lines = [
        "| width | steps | minimal tok/s | plain tok/s | fit tok/s | fit / minimal "
        "| min–max | plain / minimal | min–max | fit overhead µs/step | goal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for res in results:
        speeds = {
            side: [r.tokens_per_s(res.steps, tokens_per_step) for r in getattr(res, side)]
            for side in SIDES
        }
        m, p, q = (statistics.median(speeds[side]) for side in SIDES)
        fit_r = [b / a for a, b in zip(speeds["minimal"], speeds["lightning"])]
        plain_r = [b / a for a, b in zip(speeds["minimal"], speeds["plain"])]
        overhead = (1 / q - 1 / m) * tokens_per_step * 1e6
        goal = GOALS.get(res.width)
        verdict = "–" if goal is None else f"≥ {goal} {'met' if q / m >= goal else 'missed'}"
        lines.append(
            f"| {res.width} | {res.steps} | {m:,.0f} | {p:,.0f} | {q:,.0f} | {q / m:.3f} "
            f"| {min(fit_r):.3f}–{max(fit_r):.3f} | {p / m:.3f} "
            f"| {min(plain_r):.3f}–{max(plain_r):.3f} | {overhead:,.0f} | {verdict} |"
        )
    return "\n".join(lines)


def loss_check(results: list[WidthResult]) -> str:
    """Both sides train the same model on the same batches, so the last loss must agree."""
    bad = [
        f"width {res.width}: plain {p.loss:.6f}, Lightning {q.loss:.6f}"
        for res in results
        for p, q in zip(res.plain, res.lightning)
        if not math.isclose(p.loss, q.loss, rel_tol=1e-4, abs_tol=1e-6)
    ]
    if bad:
        return "WARNING: the two sides ended at different losses: " + "; ".join(bad)
    return "Both sides ended every repeat at the same training loss (same work)."


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def machine(threads: int) -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"lightning {L.__version__}; {threads} thread{'s' if threads != 1 else ''}"
    )


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this measurement, every setting spelled out."""
    return (
        "python benchmarks/throughput.py"
        f" --widths {','.join(map(str, args.widths))} --steps {','.join(map(str, args.steps))}"
        + ("" if args.warmup is None else f" --warmup {args.warmup}")
        + f" --threads {args.threads} --clock {args.clock} --repeats {args.repeats} --batch_size {args.batch_size}"
        f" --seq_len {args.seq_len} --optimizer {args.optimizer}"
        f" --steps_per_batch {args.steps_per_batch}"
    )


def report(args, results, load_before, load_after) -> str:
    """The Markdown block: settings, table, loss check."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tokens_per_step = args.batch_size * args.seq_len
    lines = [
        f"**{when}** — {machine(args.threads)}",
        "",
        f"`{command_line(args)}`: batch {args.batch_size} × seq_len {args.seq_len}, "
        f"{args.optimizer}, {args.steps_per_batch} steps per Lightning batch, median of "
        f"{args.repeats} repeat(s) per side, warm-up "
        + ", ".join(f"{res.width}: {res.warmup}" for res in results)
        + f" steps. Load average (1 min) {load_before:.2f} before, {load_after:.2f} after.",
    ]
    if args.note:
        lines += ["", args.note]
    lines += ["", table(results, tokens_per_step), "", loss_check(results)]
    return "\n".join(lines)


def record(block: str, key: str) -> None:
    """Put ``block`` under "## Results" in the README between markers named ``key``:
    replace the block with that key if there is one, else append."""
    begin, end = f"<!-- result: {key} -->", f"<!-- /result: {key} -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if "## Results" not in text:
        text = text.rstrip("\n") + "\n\n## Results\n"
    entry = f"{begin}\n{block}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: entry, text)
    else:
        text = text.rstrip("\n") + "\n\n" + entry + "\n"
    README.write_text(text)


def record_key(args: argparse.Namespace) -> str:
    """One recorded table per machine and settings; a re-run with the same ones replaces it."""
    widths = ",".join(map(str, args.widths))
    return (
        f"{cpu_model()} x{os.cpu_count()} threads={args.threads} widths={widths} "
        f"batch={args.batch_size} seq_len={args.seq_len} {args.optimizer}"
    )


# --- profiling -------------------------------------------------------------------------


def profile(args: argparse.Namespace, top: int) -> None:
    """cProfile the timed span of one run per side at the first width; the difference
    between the two listings is where Lightning's per-step overhead goes."""
    width, steps = args.widths[0], args.steps[0]
    warmup = warmup_for(args, steps)
    for side, timed in (
        ("minimal", time_minimal),
        ("plain", time_plain),
        ("lightning", time_lightning),
    ):
        profiler = cProfile.Profile()
        with tempfile.TemporaryDirectory() as log_dir:
            cli = build(args, width, warmup + steps + args.steps_per_batch, log_dir)
            run = timed(cli, warmup, steps, profiler)
        print(f"\n## {side}, width {width}: {run.seconds / steps * 1e6:,.0f} µs/step (profiled)")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


# --- main ------------------------------------------------------------------------------


def quiet_lightning() -> None:
    """Keep stderr to progress bars: no per-fit banners, summaries or data-loader hints."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # build_cli gets its arguments as a list while sys.argv holds ours: expected here.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists.*")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    quiet_lightning()
    if args.profile:
        profile(args, args.profile)
        return 0
    load_before = os.getloadavg()[0]
    results = [measure_width(args, w, s) for w, s in zip(args.widths, args.steps)]
    block = report(args, results, load_before, os.getloadavg()[0])
    print(block)
    if args.record:
        record(block, record_key(args))
        log(f"recorded in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
