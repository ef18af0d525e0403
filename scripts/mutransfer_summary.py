"""The μTransfer study's summary (``python scripts/mutransfer_study.py summary``).

It reads every ``result.json`` under ``<runs>/<corpus>/`` and writes ``<runs>/summary.md``,
``summary.json``, ``arms.png`` and (with hazard experiments) ``hazards.png``: per corpus,
width and arm the final val/loss over the seeds (mean, population std, range), the
tuning and training core-seconds (``result.json``'s ``core_seconds``: every attempt of
each run; and "planned", the plan's quiet per-step costs), A and A2 against B, B2, C and
D by the pre-registered rule, the hazard experiments against the arm they change, the
proxies' Spearman correlation of val/loss at half and at full horizon (the half-horizon
value read from the trials' TensorBoard events, since ``result.json`` keeps only the
final one), whether the muP and SP proxies agree trial by trial, and the SP ranking of
the same points at the proxy and at the target.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional import spearman_corrcoef

from lstm_lightning import results
from lstm_lightning.files import write_atomic
from lstm_lightning.plots import plot_arms, plot_hazards
from scripts.study_design import (
    ARM_PROXY,
    HAZARDS,
    MUP_ARMS,
    PROXIES,
    RUN_OVERHEAD,
    VAL_STEPS,
    VERDICTS,
    seconds_per_step,
)
from scripts.study_runner import say

ARMS = ("A", "A2", "B", "B2", "C", "D")  # the table's order


def arm_sources(arm: str, width: int) -> tuple[str, Callable[[dict], bool]]:
    """An arm's final runs' group, and which results are its tuning."""
    if arm in ARM_PROXY:
        study = ARM_PROXY[arm]
        return f"{study}.transfer", lambda r: r.get("study") == study
    if arm == "C":
        return f"direct_sp_w{width}.transfer", lambda r: r.get("study") == f"direct_sp_w{width}"
    if arm == "B2":  # A2's search is its tuning
        return "arm_b2.transfer", lambda r: r.get("study") == ARM_PROXY["A2"]
    return (
        f"arm_d_w{width}.transfer",
        lambda r: r["group"] == "ARM_D" and r["hparams"]["hidden_size"] == width,
    )


def load(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.rglob(results.FILE)):
        try:
            found.append({**results.read(path), "path": str(path)})
        except (OSError, ValueError) as err:
            say(f"[study] skipped {path}: {err}")
    return found


def planned(runs: list[dict]) -> float | None:
    """The runs' cost on a quiet machine: the plan's per-step costs (SECONDS_PER_STEP) at
    each run's width and horizon. ``core_seconds`` is wall time x threads, so it grows
    with whatever else shares the cores; this does not."""
    if not runs:
        return None
    costs = [(r["hparams"].get("max_steps") or 0) for r in runs]
    return float(sum((n + VAL_STEPS) * seconds_per_step(r["hparams"]["hidden_size"]) + RUN_OVERHEAD
                     for n, r in zip(costs, runs)))  # fmt: skip


def compute(runs: list[dict]) -> float | None:
    costs = [r["core_seconds"] for r in runs if r.get("core_seconds") is not None]
    return float(sum(costs)) if costs else None


def final_losses(found: list[dict], group: str, width: int) -> dict:
    """A group's runs at a width: final val/loss over its seeds (mean, population std,
    range), its runs, divergences, learning rates and training compute."""
    runs = [r for r in found if r["group"] == group and r["hparams"]["hidden_size"] == width]
    losses = [r["metrics"].get("val/loss") for r in runs if r["status"] == "completed"]
    losses = [x for x in losses if x is not None and math.isfinite(x)]
    mean = sum(losses) / len(losses) if losses else None
    std = math.sqrt(sum((x - mean) ** 2 for x in losses) / len(losses)) if losses else None
    return {"loss_mean": mean, "loss_std": std, "loss_min": min(losses, default=None),
            "loss_max": max(losses, default=None), "n_seeds": len(losses), "n_runs": len(runs),
            "n_diverged": sum(r["status"] == "diverged" for r in runs),
            "learning_rates": sorted({r["hparams"]["learning_rate"] for r in runs}),
            "training_core_seconds": compute(runs)}  # fmt: skip


def arm_row(found: list[dict], corpus: str, width: int, arm: str) -> dict:
    """An arm at a width: its ``final_losses`` and its tuning compute (core-seconds of
    each run of its search, every attempt)."""
    group, tuning = arm_sources(arm, width)
    searched = [r for r in found if tuning(r)]
    return {"corpus": corpus, "width": width, "arm": arm, **final_losses(found, group, width),
            "tuning_core_seconds": compute(searched),
            "tuning_planned_core_seconds": planned(searched)}  # fmt: skip


def hazard_rows(found: list[dict], corpus: str, width: int, arms: dict) -> list[dict]:
    """Each hazard experiment run at a width, against the muP arm whose recipe it changed
    (``arms``: arm -> ``arm_row``; ``versus`` with that arm as the other)."""
    rows = []
    for arm, hazard in itertools.product(MUP_ARMS, HAZARDS):
        row = final_losses(found, f"hazard_{arm}_{hazard}.transfer", width)
        if row["n_runs"]:
            row = {"corpus": corpus, "width": width, "arm": f"{arm}, {hazard}", **row,
                   "tuning_core_seconds": arms[arm]["tuning_core_seconds"]}  # fmt: skip
            rows.append({**row, "base": arm, "hazard": hazard,
                         "versus_base": versus(row, arms[arm])})  # fmt: skip
    return rows


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (torchmetrics', to 1e-6; ties share their mean rank);
    None under 3 pairs or with a constant side, where it means nothing."""
    if len(x) != len(y) or len(x) < 3 or len(set(x)) == 1 or len(set(y)) == 1:
        return None
    pair = (torch.tensor(v, dtype=torch.float64) for v in (x, y))
    return float(spearman_corrcoef(*pair))


def val_curve(run_dir: Path) -> dict[int, float]:
    """step -> val/loss from the run's TensorBoard events (every attempt's files)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "val/loss" not in acc.Tags().get("scalars", []):
        return {}
    return {e.step: e.value for e in acc.Scalars("val/loss")}


def stability(found: list[dict], study: str, steps: int) -> dict:
    """The rank correlation of a study's trials' val/loss at half and at full horizon."""
    half, full = [], []
    for r in found:
        loss = r["metrics"].get("val/loss")
        if r.get("study") != study or r["status"] != "completed" or loss is None:
            continue
        horizon = r["hparams"].get("max_steps") or steps  # the run's own, else the setting's
        curve = val_curve(Path(r["path"]).parent)
        curve = {s: v for s, v in curve.items() if s <= horizon * 3 // 4}  # not the final one
        if curve and math.isfinite(loss):
            near = min(curve, key=lambda s: abs(s - horizon // 2))
            half.append(curve[near])
            full.append(loss)
    return {"study": study, "n": len(full), "spearman_half_full": spearman(half, full)}


def trial_losses(found: list[dict], study: str) -> dict[int, float]:
    """trial number -> final val/loss of a study's completed trials."""
    return {r["trial"]: r["metrics"]["val/loss"] for r in found if r.get("study") == study
            and r["status"] == "completed" and r["metrics"].get("val/loss") is not None}  # fmt: skip


def agreement(found: list[dict], a: str, b: str) -> dict:
    """How many trials two studies share and how many of those have the same loss, bit for
    bit: the muP and SP proxies at the base width must (the same model and optimizer)."""
    la, lb = trial_losses(found, a), trial_losses(found, b)
    both = set(la) & set(lb)
    return {"studies": [a, b], "n": len(both), "equal": sum(la[n] == lb[n] for n in both)}


def paired(found: list[dict], proxy: str, target: str) -> dict:
    """The rank correlation of the same trial numbers (the same params: same space,
    sampler and seed) in a proxy study and a study at the target width."""

    a, b = trial_losses(found, proxy), trial_losses(found, target)
    both = sorted(set(a) & set(b))
    rho = spearman([a[n] for n in both], [b[n] for n in both])
    return {"proxy": proxy, "target": target, "n": len(both), "spearman": rho}


def versus(a: dict, other: dict) -> dict | None:
    """A against another arm: A's mean no higher (``a_wins``); ``clear`` when their seeds'
    ranges do not overlap (3 seeds against 3: 1 chance in 10 under no difference); the
    ratio of their tuning compute."""
    if a["loss_mean"] is None or other["loss_mean"] is None:
        return None
    clear = a["loss_max"] < other["loss_min"] or other["loss_max"] < a["loss_min"]
    ta, to = a["tuning_core_seconds"], other["tuning_core_seconds"]
    return {"arm": other["arm"], "by": a["arm"], "a_wins": a["loss_mean"] <= other["loss_mean"],
            "gap": other["loss_mean"] - a["loss_mean"], "clear": clear,
            "tuning_ratio": ta / to if ta and to else None,
            "tuning_ratio_planned": ratio(a.get("tuning_planned_core_seconds"),
                                          other.get("tuning_planned_core_seconds"))}  # fmt: skip


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def collect(args) -> dict:
    rows, checks, stable, pairs, same, hazards = [], [], [], [], [], []
    for corpus in args.corpora:
        found = load(args.runs / corpus) if (args.runs / corpus).is_dir() else []
        stable += [{"corpus": corpus, **stability(found, study, args.steps)}
                   for study in PROXIES if any(r.get("study") == study for r in found)]  # fmt: skip
        same.append({"corpus": corpus, **agreement(found, "proxy_mup", "proxy_sp")})
        for width in args.widths:
            here = {arm: arm_row(found, corpus, width, arm) for arm in ARMS}
            rows += [row for row in here.values() if row["n_runs"]]
            against = [versus(here[a], here[x]) for a, x in VERDICTS
                       if here[a]["n_runs"] and here[x]["n_runs"]]  # fmt: skip
            hazards += hazard_rows(found, corpus, width, here)
            checks.append({"corpus": corpus, "width": width, "versus": [v for v in against if v]})
            if width in args.c_widths:
                pairs.append({"corpus": corpus, "width": width,
                              **paired(found, "proxy_sp", f"direct_sp_w{width}")})  # fmt: skip
    return {"runs": str(args.runs), "steps": args.steps, "arms": rows, "a_versus": checks,
            "horizon_stability": stable, "proxy_vs_target_ranking": pairs,
            "proxies_agree": same, "hazards": hazards}  # fmt: skip


def num(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(doc: dict) -> str:
    lines = ["| corpus | width | arm | val/loss mean ± std | seeds | lr | tuning core-s | "
             "tuning core-s, planned | training core-s |",
             "|---|---:|:-:|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for r in doc["arms"]:
        lr = ", ".join(f"{x:.3g}" for x in r["learning_rates"])
        lines.append(f"| {r['corpus']} | {r['width']} | {r['arm']} | {num(r['loss_mean'])} ± "
                     f"{num(r['loss_std'])} | {r['n_seeds']}/{r['n_runs']} | {lr} | "
                     f"{num(r['tuning_core_seconds'], ',.0f')} | "
                     f"{num(r['tuning_planned_core_seconds'], ',.0f')} | "
                     f"{num(r['training_core_seconds'], ',.0f')} |")  # fmt: skip
    lines.append("")
    for c in doc["a_versus"]:
        for v in c["versus"]:
            spread = (
                "clear: the seeds' ranges do not overlap" if v["clear"] else "within the spread"
            )
            lines.append(f"- {c['corpus']}, width {c['width']}: {v['by']} "
                         f"{'<=' if v['a_wins'] else '>'} {v['arm']} (gap {v['gap']:+.4f}, "
                         f"{spread}; {v['by']}'s tuning compute / {v['arm']}'s: "
                         f"{num(v['tuning_ratio'], '.3f')} measured, "
                         f"{num(v['tuning_ratio_planned'], '.3f')} planned)")  # fmt: skip
    for s in doc["horizon_stability"]:
        lines.append(f"- {s['corpus']}, {s['study']}: Spearman half vs full horizon "
                     f"{num(s['spearman_half_full'], '.3f')} over {s['n']} trials")  # fmt: skip
    for g in doc["proxies_agree"]:
        lines.append(f"- {g['corpus']}: the muP and SP proxies (the same model at the base "
                     f"width) agree on {g['equal']} of {g['n']} shared trials")  # fmt: skip
    if doc["hazards"]:
        lines += ["", "Hazard experiments (an arm's recipe with one change; gap: the arm's mean "
                  "minus the experiment's, positive when the change helps):", "",
                  "| corpus | width | arm | change | val/loss mean ± std | seeds | gap to the arm "
                  "| spread |", "|---|---:|:-:|---|---|---:|---:|---|"]  # fmt: skip
        for h in doc["hazards"]:
            v = h["versus_base"]
            gap = "-" if v is None else f"{v['gap']:+.4f}"
            spread = "-" if v is None else "clear" if v["clear"] else "within the seeds' spread"
            lines.append(f"| {h['corpus']} | {h['width']} | {h['base']} | {h['hazard']} | "
                         f"{num(h['loss_mean'])} ± {num(h['loss_std'])} | "
                         f"{h['n_seeds']}/{h['n_runs']} | {gap} | {spread} |")  # fmt: skip
        lines.append("")
    for p in (p for p in doc["proxy_vs_target_ranking"] if p["n"]):  # arm C's search ran
        lines.append(f"- {p['corpus']}, SP: Spearman of the same trials at width "
                     f"{p['width']} and at the proxy {num(p['spearman'], '.3f')} over {p['n']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def summary(args) -> int:
    doc = collect(args)
    text = markdown(doc)
    print(text, end="")
    if args.runs.is_dir():
        write_atomic(args.runs / "summary.md", text)
        write_atomic(args.runs / "summary.json", json.dumps(results.finite(doc), indent=2) + "\n")
        png = io.BytesIO()
        plot_arms(doc["arms"], png)
        write_atomic(args.runs / "arms.png", png.getvalue())
        wrote = "arms.png"
        if doc["hazards"]:
            png = io.BytesIO()
            plot_hazards(doc["hazards"], doc["arms"], png)
            write_atomic(args.runs / "hazards.png", png.getvalue())
            wrote += ", hazards.png"
        say(f"wrote {args.runs / 'summary.md'}, {args.runs / 'summary.json'}, {wrote}")
    return 0
