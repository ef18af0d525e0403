"""The μTransfer study of issue 14 as one resumable driver (protocol: docs/mutransfer_protocol.md).

    python scripts/mutransfer_study.py plan      # every command in order, with its core-seconds
    python scripts/mutransfer_study.py run       # run them; run it again to resume
    python scripts/mutransfer_study.py summary   # arms x widths x corpora, compute, stability

It only calls ``python cli.py tune|transfer|sweep`` (and the corpus scripts), in the
pre-registered order, cheapest and most informative first: the proxy searches of both
corpora (width 32 = base_hidden_size, muP and SP, the same space and sampler seed, so the
two searches try the same points), then every arm at the first target width, then at the
next. Per corpus and target width, the arms, each trained at the final seeds:

- A: ``transfer`` of the muP proxy study's best trial;
- B: ``transfer`` of the SP proxy study's best trial;
- D: SP at its default multipliers, an octave grid of learning rates at the target
  (``configs/study/arm_d.py``), widened an octave at a time while its best is at an edge,
  then its best rate (``<corpus>/arm_d_w<W>.yaml``, ``transfer --from_file``);
- C: SP searched at the target itself (a study of fewer trials, same space), then its best;
- A2, B2: A and B with the muP proxy searched by TPE (``proxy_mup_tpe``), the SP one copying
  A2's recipe; the hazards: A2's (or A's) recipe with one factor changed.

Every command resumes (``tune`` finishes a half-done study; ``transfer`` and ``sweep`` skip
finished runs); a finished step leaves ``<runs>/.steps/<step>.done`` holding its command,
so a rerun does not even start it (``scripts/study_runner.py``). ``--jobs N`` runs up to N
steps at once, each when the steps whose output it reads have finished, with the cores
shared among them (``--workers auto``); a failed step is reported, the steps that need it
are not started, and the rest go on; the run exits 1 if any failed. Settings: a flag, else
its environment variable, else the default (``--help``); the derived configs go to
``<runs>/configs/`` and a study refuses a rerun whose config changed, so a study keeps
one horizon. A negative list takes ``=``: ``--d_grid=-11,-4``.

``summary`` writes ``<runs>/summary.md``, ``summary.json``, ``arms.png`` and, once a
hazard experiment has a finished seed, ``hazards.png`` (``scripts/mutransfer_summary.py``:
what it reads and reports).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lstm_lightning import results  # noqa: E402
from lstm_lightning.files import write_atomic  # noqa: E402
from scripts import study_runner as runner  # noqa: E402
from scripts.mutransfer_summary import summary  # noqa: E402
from scripts.study_design import (  # noqa: E402
    ARM_PROXY,
    HAZARDS,
    MUP_ARMS,
    PROXIES,
    RUN_OVERHEAD,
    VAL_STEPS,
    WIDTH_SCALED,
    seconds_per_step,
)
from scripts.study_runner import StepFailed, Unchanged, say  # noqa: E402

CORPORA = {  # name -> (base config, script that writes its data)
    "stdlib": ("configs/study/stdlib.yaml", "scripts/stdlib_corpus.py"),
    "prose": ("configs/study/prose.yaml", "scripts/prose_corpus.py"),
}
ARM_D_DEFS = "configs/study/arm_d.py"
D_RANGE = (-16, -1)  # the log2 lrs configs/study/arm_d.py defines (a test checks)
# name, environment variable, default, help
SETTINGS = (
    ("runs", "STUDY_RUNS", "runs/study/mutransfer", "the study's runs folder (outside git)"),
    ("corpora", "STUDY_CORPORA", "stdlib,prose", "corpora, in order (stdlib, prose)"),
    ("steps", "STUDY_STEPS", "1000", "training horizon of every run (even: val at half too)"),
    ("space", "STUDY_SPACE", "configs/study/space.yaml", "the search space of every study"),
    (
        "workers",
        "STUDY_WORKERS",
        "auto",
        "--workers of every command (a number or auto: the cores, shared among the jobs)",
    ),
    ("jobs", "STUDY_JOBS", "1", "steps run at once, each when the steps it needs are done"),
    ("proxy_width", "STUDY_PROXY_WIDTH", "32", "the proxy's width = base_hidden_size"),
    ("proxy_trials", "STUDY_PROXY_TRIALS", "64", "trials of each proxy search (muP, SP)"),
    ("widths", "STUDY_WIDTHS", "256,512", "target widths, in order"),
    ("seeds", "STUDY_SEEDS", "1,2,3", "the arms' final seeds (trials and grids use seed 0)"),
    ("c_widths", "STUDY_C_WIDTHS", "256", "target widths that get arm C (a search there)"),
    ("c_trials", "STUDY_C_TRIALS", "16", "trials of arm C's search at the target"),
    ("a2_trials", "STUDY_A2_TRIALS", "128", "trials of arm A2's muP proxy search (TPE; 0: no A2)"),
    ("d_grid", "STUDY_D_GRID", "-11,-4", "arm D's first log2-lr window, lowest,highest"),
    ("d_extend", "STUDY_D_EXTEND", "3", "octaves arm D may add at an edge of its grid"),
    ("hazards", "STUDY_HAZARDS", ",".join(HAZARDS), "hazard experiments, in order (none: -)"),
    ("hazard_arm", "STUDY_HAZARD_ARM", "A2", "the muP arm whose recipe each hazard changes"),
)
# --- settings and derived configs -----------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("plan", "run", "summary"))
    for name, env, default, text in SETTINGS:
        ap.add_argument(f"--{name}", default=os.environ.get(env, default), help=f"{text} ({env})")
    args = ap.parse_args(argv)
    try:
        args.steps, args.proxy_width = int(args.steps), int(args.proxy_width)
        args.proxy_trials, args.c_trials = int(args.proxy_trials), int(args.c_trials)
        args.a2_trials = int(args.a2_trials)
        args.d_extend, args.jobs = int(args.d_extend), int(args.jobs)
        args.widths, args.c_widths = ints(args.widths), ints(args.c_widths)
        args.seeds, args.d_grid = ints(args.seeds), ints(args.d_grid)
    except ValueError as err:
        raise SystemExit(f"error: {err}; see --help") from None
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs {args.jobs}: give 1 or more steps at once")
    if args.jobs > 1 and args.workers == "auto":  # each command takes its share of the cores
        args.workers = str(max(1, cores() // args.jobs))
    args.hazards = [h for h in args.hazards.split(",") if h and h != "-"]
    unknown = [h for h in args.hazards if h not in HAZARDS]
    if unknown:
        raise SystemExit(f"error: --hazards: unknown {unknown}; use any of {', '.join(HAZARDS)}")
    if args.hazard_arm not in MUP_ARMS:
        raise SystemExit(f"error: --hazard_arm {args.hazard_arm}: use one of "
                         f"{', '.join(MUP_ARMS)} (the hazards change a muP arm's recipe)")  # fmt: skip
    setting = PROXIES[ARM_PROXY[args.hazard_arm]][2]  # the setting with its proxy's trials
    if args.command != "summary" and args.hazards and not getattr(args, setting):
        raise SystemExit(f"error: --hazard_arm {args.hazard_arm}: its proxy search has no "
                         f"trials (--{setting} 0); pass another --hazard_arm or --hazards -")  # fmt: skip
    args.corpora = [c for c in args.corpora.split(",") if c]
    unknown = [c for c in args.corpora if c not in CORPORA]
    if unknown or not args.corpora:
        raise SystemExit(f"error: --corpora: unknown {unknown}; use {', '.join(CORPORA)}")
    if args.steps < 2 or args.steps % 2 or len(args.d_grid) != 2:
        raise SystemExit("error: --steps must be even (>= 2) and --d_grid LOW,HIGH two numbers")
    runs = Path(args.runs).absolute()  # the commands run in the repository's root
    args.runs = runs.relative_to(ROOT) if runs.is_relative_to(ROOT) else runs
    return args


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def derived_config(args, corpus: str, parametrization: str, width: int) -> Path:
    """The corpus config at this horizon, parametrization and width, written under
    ``<runs>/configs/`` (the same text for the same settings, so a study reopens)."""
    with open(ROOT / CORPORA[corpus][0], encoding="utf-8") as f:
        tree = yaml.safe_load(f)
    half = args.steps // 2
    tree["trainer"].update(
        max_steps=args.steps, val_check_interval=half, log_every_n_steps=min(50, half)
    )
    tree["checkpoint"]["every_n_train_steps"] = min(100, half)
    tree["model"].update(
        parametrization=parametrization, hidden_size=width, base_hidden_size=args.proxy_width
    )
    path = args.runs / "configs" / f"{corpus}_{parametrization}_w{width}.yaml"
    if args.command != "plan":
        text = yaml.safe_dump(tree, sort_keys=False)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
    return path


def data_ready(corpus: str) -> bool:
    """Whether the corpus file is there (the data step is judged by it, not by a marker)."""
    return data_path(corpus).is_file()


def data_path(corpus: str) -> Path:
    with open(ROOT / CORPORA[corpus][0], encoding="utf-8") as f:
        return ROOT / yaml.safe_load(f)["data"]["path"]


# --- steps ----------------------------------------------------------------------------------


@dataclass
class Step:
    """One command (or, with ``action``, one decision of the driver's own) of the study."""

    name: str  # unique; <runs>/.steps/<name>.done marks it finished
    phase: str
    argv: list[str]
    runs: int = 0  # training runs it may start (for the plan's cost)
    width: int = 0
    steps: int = 0
    action: Callable[[], str] | None = field(default=None, repr=False)
    done_if: Callable[[], bool] | None = field(default=None, repr=False)
    needs: tuple[str, ...] = ()  # the steps whose output it reads (--jobs runs the rest beside)

    def cost(self) -> float:
        per_run = (self.steps + VAL_STEPS) * seconds_per_step(self.width) + RUN_OVERHEAD
        return self.runs * per_run if self.steps else 0.0

    def text(self) -> str:
        return shlex.join(self.argv) if self.argv else f"(driver) {self.name}"


def cli(args, *words: str) -> list[str]:
    return [sys.executable, "cli.py", *words, "--workers", str(args.workers)]


def proxy_recipe(args, corpus: str, arm: str) -> dict:
    """The best trial of ``arm``'s proxy search (its ``best.yaml``, written by the arm's
    transfer), as a config tree; ``StepFailed`` when the transfer has not run yet."""
    best = args.runs / corpus / ARM_PROXY[arm] / "best.yaml"
    if not best.is_file():
        raise StepFailed(f"{best} is missing: arm {arm}'s transfer writes it")
    return yaml.safe_load(best.read_text(encoding="utf-8"))


def proxy_steps(args, corpus: str) -> list[Step]:
    where, out = str(args.runs / corpus), []
    for study, (param, sampler, setting) in PROXIES.items():
        trials = getattr(args, setting)
        if not trials:
            continue
        config = str(derived_config(args, corpus, param, args.proxy_width))
        argv = cli(args, "tune", "--config", config, "--space", args.space, "--study", study,
                   "--trials", str(trials), "--sampler", sampler, "--seed", "0",
                   "--runs_dir", where)  # fmt: skip
        out.append(Step(f"{corpus}.{study}", "proxies", argv, trials, args.proxy_width,
                        args.steps, needs=(f"{corpus}.data",)))  # fmt: skip
    return out


def arm_steps(args, corpus: str, width: int) -> list[Step]:
    """A, B, A2, B2, D, C at one target width, in that order (C's search is the dearest)."""
    where, seeds = str(args.runs / corpus), ",".join(map(str, args.seeds))
    sp, n = str(derived_config(args, corpus, "sp", width)), len(args.seeds)
    final = ("--widths", str(width), "--seeds", seeds, "--runs_dir", where)
    best = str(args.runs / corpus / f"arm_d_w{width}.yaml")

    def step(arm: str, argv: list[str], runs: int, **extra) -> Step:
        return Step(f"{corpus}.w{width}.{arm}", f"width {width}", argv, runs, width, args.steps,
                    **extra)  # fmt: skip

    low, high = args.d_grid

    def transfer(arm: str) -> Step:
        argv = cli(args, "transfer", "--study", ARM_PROXY[arm], *final)
        return step(arm, argv, n, needs=(f"{corpus}.{ARM_PROXY[arm]}",))

    out = [transfer("A"), transfer("B")]
    if args.a2_trials:  # A2, and B2: A2's recipe under SP (B's relation to A)
        b2 = str(args.runs / corpus / "arm_b2.yaml")
        out += [transfer("A2"),
                step("B2", cli(args, "transfer", "--from_file", b2, "--config", sp, *final), n,
                     action=lambda: write_b2(args, corpus),  # A2's transfer writes its recipe
                     needs=(f"{corpus}.w{width}.A2",))]  # fmt: skip
    out += [
        d_grid_step(args, corpus, width, range(low, high + 1), f"{corpus}.w{width}.D_grid"),
        step(
            "D_choose",
            [],
            args.d_extend,
            action=lambda: choose_d(args, corpus, width),
            needs=(f"{corpus}.w{width}.D_grid",),
        ),
        step(
            "D",
            cli(args, "transfer", "--from_file", best, "--config", sp, *final),
            n,
            needs=(f"{corpus}.w{width}.D_choose",),
        ),
    ]
    if width in args.c_widths:
        study = f"direct_sp_w{width}"
        tune = cli(args, "tune", "--config", sp, "--space", args.space, "--study", study, "--trials",
                   str(args.c_trials), "--sampler", "random", "--seed", "0", "--runs_dir", where)  # fmt: skip
        out += [step("C_search", tune, args.c_trials, needs=(f"{corpus}.data",)),
                step("C", cli(args, "transfer", "--study", study, *final), n,
                     needs=(f"{corpus}.w{width}.C_search",))]  # fmt: skip
    return out


def d_grid_step(args, corpus: str, width: int, log2_lrs, name: str) -> Step:
    sp = str(derived_config(args, corpus, "sp", width))
    labels = ",".join(f"w{width}_log2lr{k}" for k in log2_lrs)
    argv = cli(args, "sweep", "--definitions", ARM_D_DEFS, "--experiments", "ARM_D", "--labels",
               labels, "--config", sp, "--runs_dir", str(args.runs / corpus))  # fmt: skip
    return Step(
        name, f"width {width}", argv, len(log2_lrs), width, args.steps, needs=(f"{corpus}.data",)
    )


def plan(args) -> list[Step]:
    """Every step of the study in the order it runs."""
    steps = []
    for corpus in args.corpora:
        path = data_path(corpus)
        steps.append(Step(f"{corpus}.data", "data", [sys.executable, CORPORA[corpus][1], "--out",
                          str(path.relative_to(ROOT))], done_if=functools.partial(data_ready, corpus)))  # fmt: skip
    for corpus in args.corpora:
        steps += proxy_steps(args, corpus)
    for i, width in enumerate(args.widths):
        for corpus in args.corpora:
            steps += arm_steps(args, corpus, width)
        if i == 0:  # the hazards at the first target width, before the dearer widths
            steps += [hazard_step(args, c, width, h) for c in args.corpora for h in args.hazards]
    return steps


# --- the hazard experiments -----------------------------------------------------------------


def hazard_recipe(args, corpus: str, hazard: str) -> Path:
    """``<runs>/<corpus>/hazard_<arm>_<name>.yaml``: the arm's recipe with the hazard's
    change (its transfer's group is the file's stem, so each arm's hazards stay apart)."""
    return args.runs / corpus / f"hazard_{args.hazard_arm}_{hazard}.yaml"


def hazard_change(hazard: str, model: dict, m: float) -> dict:
    """The model keys the hazard sets on a recipe whose model section is ``model``."""
    return {k: (model.get(k, 1.0) * m if v == WIDTH_SCALED else v)
            for k, v in HAZARDS[hazard].items()}  # fmt: skip


def write_hazard(args, corpus: str, hazard: str, width: int) -> str:
    """Write the hazard's recipe, or raise ``Unchanged`` when the change is the recipe's own."""
    arm = args.hazard_arm
    recipe = proxy_recipe(args, corpus, arm)
    change = hazard_change(hazard, recipe["model"], width / args.proxy_width)
    # A key the recipe lacks takes the config's value: count it as changed.
    if all(k in recipe["model"] and recipe["model"][k] == v for k, v in change.items()):
        raise Unchanged(f"the recipe already has {change}")
    recipe["model"].update(change)
    head = (
        f"# hazard {hazard} at width {width}: arm {arm}'s recipe ({ARM_PROXY[arm]}) with {change}\n"
    )
    write_atomic(hazard_recipe(args, corpus, hazard), head + yaml.safe_dump(recipe))
    return f"recipe {hazard_recipe(args, corpus, hazard)}"


def hazard_step(args, corpus: str, width: int, hazard: str) -> Step:
    mup = str(derived_config(args, corpus, "mup", width))
    argv = cli(args, "transfer", "--from_file", str(hazard_recipe(args, corpus, hazard)),
               "--config", mup, "--widths", str(width), "--seeds",
               ",".join(map(str, args.seeds)), "--runs_dir", str(args.runs / corpus))  # fmt: skip
    name = f"{corpus}.w{width}.hazard_{args.hazard_arm}_{hazard}"  # the recipe's own name
    return Step(name, f"hazards {width}", argv, len(args.seeds), width, args.steps,
                action=lambda: write_hazard(args, corpus, hazard, width),  # reads the arm's
                needs=(f"{corpus}.w{width}.{args.hazard_arm}",))  # best.yaml  # fmt: skip


def write_b2(args, corpus: str) -> str:
    """``<runs>/<corpus>/arm_b2.yaml``: arm A2's recipe (the TPE proxy's best) under SP.
    At the proxy width the two parametrizations are the same model, so B2 is to A2 what
    B is to A: the recipe carried by SP's rules instead of muP's."""
    recipe = proxy_recipe(args, corpus, "A2")
    recipe["model"]["parametrization"] = "sp"
    path = args.runs / corpus / "arm_b2.yaml"
    write_atomic(path, f"# arm B2: arm A2's recipe ({ARM_PROXY['A2']}) under SP\n"
                 + yaml.safe_dump(recipe))  # fmt: skip
    return f"recipe {path}"


# --- arm D's choice -------------------------------------------------------------------------


def grid_losses(args, corpus: str, width: int) -> dict[int, float]:
    """log2 lr -> final val/loss of arm D's grid runs at ``width`` (diverged: +inf)."""
    found = {}
    for path in (args.runs / corpus / "ARM_D").glob(f"w{width}_log2lr*/{results.FILE}"):
        result = results.read(path)
        loss = result["metrics"].get("val/loss")
        k = int(path.parent.name.split("log2lr")[1])
        if result["status"] == "diverged" or (loss is not None and not math.isfinite(loss)):
            found[k] = math.inf
        elif result["status"] == "completed" and loss is not None:
            found[k] = float(loss)
    return found


def best_of_grid(losses: dict[int, float], low: int, high: int) -> int | None:
    """The window's best log2 lr: the lowest loss, on a tie the smaller rate."""
    inside = [(loss, k) for k, loss in losses.items() if low <= k <= high and math.isfinite(loss)]
    return min(inside)[1] if inside else None


def choose_d(args, corpus: str, width: int) -> str:
    """Widen the grid an octave at a time while its best is at an edge (at most d_extend
    octaves in all), then write ``arm_d_w<W>.yaml`` with the best rate."""
    low, high = args.d_grid
    budget = args.d_extend
    while True:
        best = best_of_grid(grid_losses(args, corpus, width), low, high)
        if best is None:
            raise StepFailed(f"no completed run in arm D's grid at width {width}")
        added = low - 1 if best == low else high + 1 if best == high else None
        if added is None or budget == 0 or not D_RANGE[0] <= added <= D_RANGE[1]:
            break
        name = f"{corpus}.w{width}.D_grid_{added}"
        say(f"[study] arm D's best at width {width} is at the grid's edge: adding log2 lr {added}")
        if runner.run_command(d_grid_step(args, corpus, width, [added], name).argv):
            raise StepFailed(f"the grid run at log2 lr {added} failed")
        low, high, budget = min(low, added), max(high, added), budget - 1
    loss = grid_losses(args, corpus, width)[best]
    edge = " (still at an edge of the grid)" if best in (low, high) else ""
    note = f"arm D at width {width}: log2 lr {best}, val/loss {loss:.4f}, grid {low}..{high}{edge}"
    text = f"# {note}\nmodel:\n  learning_rate: {2.0**best!r}\n  parametrization: sp\n"
    write_atomic(args.runs / corpus / f"arm_d_w{width}.yaml", text)
    return note


# --- running --------------------------------------------------------------------------------


def run(args) -> int:
    """Every step not done yet (``scripts/study_runner.py``), up to ``--jobs`` at once."""
    failed, blocked = runner.run(plan(args), args.runs, args.jobs)
    lines = [f"failed: {', '.join(failed)}"] if failed else []
    lines += [f"not started (a step they need failed): {', '.join(blocked)}"] if blocked else []
    say(f"[study] {'; '.join(lines) or 'every step is done'}; "
        f"summary: python scripts/mutransfer_study.py summary --runs {args.runs}")  # fmt: skip
    return 1 if failed or blocked else 0


def plan_text(args) -> str:
    steps = plan(args)
    rows, phases, left = [], {}, 0.0
    for step in steps:
        state = "done" if runner.is_done(args.runs, step) else "to do"
        phases[step.phase] = phases.get(step.phase, 0.0) + step.cost()
        left += step.cost() if state == "to do" else 0.0
        rows.append(f"{step.phase:10} {state:6} {step.runs:4d} {step.cost():9,.0f}  "
                    f"{step.name}\n    {step.text()}")  # fmt: skip
    total = sum(phases.values())
    cores_here = cores()
    lines = [f"{'phase':10} {'state':6} runs core-sec  step / command", *rows, ""]
    lines += [f"{phase:10} {cost:12,.0f} core-seconds" for phase, cost in phases.items()]
    lines.append(
        f"{'total':10} {total:12,.0f} core-seconds ({total / 3600:.1f} core-hours; "
        f"about {total / 3600 / cores_here:.1f} h on this machine's {cores_here} cores; {args.steps} "
        "steps a run; arm D's choice counts its possible edge runs)"
    )
    lines.append(f"{'to do':10} {left:12,.0f} core-seconds ({left / 3600:.1f} core-hours)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.chdir(ROOT)  # the commands and their paths are relative to the repository's root
    if args.command == "plan":
        print(plan_text(args))
        return 0
    if args.command == "summary":
        return summary(args)
    try:
        return run(args)
    except (KeyboardInterrupt, runner.Terminated):
        say("[study] stopped; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
