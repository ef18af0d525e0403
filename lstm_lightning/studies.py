"""Studies and transfers in a runs folder, for the report: what the proxy's tuning bought.

A study (``cli.py tune``) is a folder holding ``study.yaml``; its trials are read from its
Optuna journal and their compute from their own ``result.json`` (``study`` = its name). A
transfer (``cli.py transfer``) is an experiment group whose name ends in ``.transfer``:
``<study>.transfer`` carries that study's best trial to the target widths.

- ``read_study`` summarises one study: its trials ranked (COMPLETE by objective value,
  ties by number, then the others by number), the best trial, each hyperparameter's
  importance (Optuna's PED-ANOVA evaluator, which needs no scikit-learn or scipy; with
  fewer than ``MIN_IMPORTANCE_TRIALS`` complete trials a note says so instead) and the
  tuning compute: the sum of its trials' ``core_seconds`` (every attempt of each run).
- ``transfer_tables`` gives, per transfer group and target width, TP5's table: the
  transferred recipe's final val/loss (mean ± population std over the seeds that
  completed) and training compute (the runs' ``core_seconds``), the tuning compute of the
  study it came from, and a row per study in the same folder tuned directly at that width
  (its proxy ``hidden_size`` equals the width): its own ``.transfer`` runs at that width,
  else its best trial's run.

``studies_json`` writes both as strict JSON (``docs/result_schema.md``); ``markdown`` and
``text`` as report.md's sections and the lines the CLI prints.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from lstm_lightning.results import finite
from lstm_lightning.tables import fmt, markdown_table

# A study's files and trial labels as ``study`` writes them (tests check they agree); not
# imported from there, because study needs fit and Lightning, and this is pure analysis.
DEFINITION, JOURNAL = "study.yaml", "study.journal"

SCHEMA = 1  # studies.json's schema version
SUFFIX = ".transfer"  # a transfer group's name ends with it
TOP = 10  # trials in the report's table
MIN_IMPORTANCE_TRIALS = 5  # complete trials PED-ANOVA needs to say anything


def is_search_run(result: dict) -> bool:
    """A study's trial or a transfer's run: its learning rate was searched or carried, not
    swept on a grid, so the learning-rate transfer sections leave it out."""
    return result.get("study") is not None or result["group"].endswith(SUFFIX)


# --- studies --------------------------------------------------------------------------------


def find_studies(runs_dir: str | os.PathLike) -> list[Path]:
    """Every folder below ``runs_dir`` that holds a ``study.yaml``, in path order."""
    return sorted(p.parent for p in Path(runs_dir).rglob(DEFINITION))


def read_studies(runs_dir: str | os.PathLike, results: list[dict]) -> tuple[list[dict], list]:
    """``read_study`` of every study below ``runs_dir``; and one warning line per study
    that could not be read (skipped)."""
    found, problems = [], []
    for folder in find_studies(runs_dir):
        try:
            found.append(read_study(folder, results))
        except (OSError, ValueError, KeyError, yaml.YAMLError) as err:
            problems.append(f"skipped study {folder}: {str(err).splitlines()[0] or type(err)}")
    return found, problems


def read_study(folder: Path, results: list[dict]) -> dict:
    """One study as JSON-ready data: its definition, ranked trials, best, importance and
    tuning compute. Raises ValueError (or OSError) when its files cannot be read."""
    definition = yaml.safe_load((folder / DEFINITION).read_text(encoding="utf-8"))
    if not isinstance(definition, dict):
        raise ValueError(f"{folder / DEFINITION} is not a mapping")
    name = str(definition.get("study") or folder.name)
    trials = load_trials(folder, name)
    runs = {r["trial"]: r for r in results if r.get("study") == name and r.get("trial") is not None}
    ranked = [_trial_record(t, runs.get(t.number)) for t in sorted(trials, key=_rank)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    importance, note = importances(complete)
    costs = [r["core_seconds"] for r in runs.values() if r.get("core_seconds") is not None]
    return {
        "study": name,
        "folder": str(folder),
        "objective": definition.get("objective", "val/loss"),
        "sampler": definition.get("sampler"),
        "seed": definition.get("seed"),
        "proxy": definition.get("proxy") or {},
        "space": definition.get("space") or {},
        "counts": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "best": ranked[0] if complete else None,
        "trials": ranked,
        "importance": importance,
        "importance_note": note,
        "tuning_core_seconds": float(sum(costs)),
        "tuning_runs": len(costs),
    }


def load_trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials from its journal; none when it has no journal yet."""
    path = folder / JOURNAL
    if not path.is_file():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ValueError(f"{path} holds no study named {name}") from None
    return study.get_trials(deepcopy=False)


def label(number: int) -> str:
    return f"trial_{number:04d}"


def _rank(t: optuna.trial.FrozenTrial) -> tuple:
    if t.state == TrialState.COMPLETE:
        return (0, t.value, t.number)
    return (1, 0.0, t.number)


def _trial_record(t: optuna.trial.FrozenTrial, result: dict | None) -> dict:
    return {
        "number": t.number,
        "label": t.user_attrs.get("label", label(t.number)),
        "state": t.state.name.lower(),
        "value": t.value if t.state == TrialState.COMPLETE else None,
        "params": dict(t.params),
        "core_seconds": None if result is None else result.get("core_seconds"),
        "error": t.user_attrs.get("error"),
    }


def importances(complete: list) -> tuple[dict | None, str | None]:
    """Each hyperparameter's importance over the complete trials (PED-ANOVA), largest
    first, with Optuna's warning if it gave one; or None and why not."""
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"too few complete trials to rank the hyperparameters: {len(complete)}, "
            f"importance needs at least {MIN_IMPORTANCE_TRIALS}"
        )
    study = optuna.create_study(direction="minimize")
    study.add_trials(complete)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as err:
            return None, f"importance not computed: {err}"
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return {k: float(v) for k, v in found.items()}, (said[0] if said else None)


# --- transfers ------------------------------------------------------------------------------


def loss_row(runs: list[dict]) -> dict:
    """Final val/loss mean ± population std over the completed runs, counts, compute."""
    losses = [r["metrics"].get("val/loss") for r in runs if r["status"] == "completed"]
    losses = np.array([x for x in losses if x is not None and math.isfinite(x)], dtype=float)
    costs = [r["core_seconds"] for r in runs if r.get("core_seconds") is not None]
    statuses = [r["status"] for r in runs]
    return {
        "loss_mean": float(losses.mean()) if losses.size else None,
        "loss_std": float(losses.std()) if losses.size else None,  # ddof=0: the seeds run
        "n_seeds": int(losses.size),
        "n_runs": len(runs),
        "n_diverged": statuses.count("diverged"),
        "n_failed": statuses.count("failed"),
        "parametrization": ", ".join(sorted({str(r["hparams"]["parametrization"]) for r in runs})),
        "training_core_seconds": float(sum(costs)) if costs else None,
    }


def _row(kind: str, study: dict | None, name: str, source: str, runs: list[dict]) -> dict:
    tuning = None if study is None else study["tuning_core_seconds"]
    row = {"kind": kind, "study": name, "runs": source, **loss_row(runs)}
    row["tuned_at_width"] = None if study is None else study["proxy"].get("hidden_size")
    row["tuning_core_seconds"] = tuning
    training = row["training_core_seconds"]
    row["total_core_seconds"] = None if None in (tuning, training) else tuning + training
    return row


def transfer_tables(results: list[dict], studies: list[dict]) -> list[dict]:
    """One entry per transfer group: its study, and per target width its rows (the
    transferred recipe first, then each study tuned directly at that width)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["group"].endswith(SUFFIX):
            groups.setdefault(r["group"], []).append(r)
    by_name = {s["study"]: s for s in studies}
    tables = []
    for group in sorted(groups):
        name = group[: -len(SUFFIX)]
        widths = sorted({r["hparams"]["hidden_size"] for r in groups[group]})
        rows = []
        for w in widths:
            runs = [r for r in groups[group] if r["hparams"]["hidden_size"] == w]
            here = [_row("transferred", by_name.get(name), name, group, runs)]
            here += direct_rows(w, name, groups, studies, results)
            rows.append({"width": w, "rows": here})
        source = by_name.get(name)
        proxy = None if source is None else source["proxy"].get("hidden_size")
        tables.append({"group": group, "study": name, "study_found": source is not None,
                       "proxy_width": proxy, "widths": rows})  # fmt: skip
    return tables


def direct_rows(width, source, groups, studies, results) -> list[dict]:
    """Rows of the studies tuned at ``width`` (not ``source``): their own transfer runs
    at that width, else their best trial's run."""
    rows = []
    for s in studies:
        if s["study"] == source or s["proxy"].get("hidden_size") != width:
            continue
        own = [
            r for r in groups.get(s["study"] + SUFFIX, []) if r["hparams"]["hidden_size"] == width
        ]
        if own:
            rows.append(_row("tuned here", s, s["study"], s["study"] + SUFFIX, own))
            continue
        best = s["best"]
        runs = [r for r in results if r.get("study") == s["study"] and best
                and r.get("trial") == best["number"]]  # fmt: skip
        where = f"{s['study']}/{best['label']}" if best else f"{s['study']} (no complete trial)"
        rows.append(_row("tuned here", s, s["study"], where, runs))
    return rows


# --- output ---------------------------------------------------------------------------------


def studies_json(studies: list[dict], transfers: list[dict], runs_dir, notes: list) -> str:
    """``studies.json``: strict JSON (NaN and infinities as null)."""
    doc = {"schema": SCHEMA, "runs_dir": str(runs_dir), "min_importance_trials":
           MIN_IMPORTANCE_TRIALS, "studies": studies, "transfers": transfers, "warnings": notes}  # fmt: skip
    return json.dumps(finite(doc), indent=2, allow_nan=False) + "\n"


def _cost(seconds: float | None) -> str:
    """Core-seconds: whole above 100, else to a tenth (a tiny study's trials take seconds)."""
    return fmt(seconds, ",.0f" if seconds is not None and seconds >= 100 else ".1f")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _params(params: dict) -> str:
    return ", ".join(f"{k}={fmt(v, '.4g')}" for k, v in params.items())


def study_lines(s: dict) -> list[str]:
    """A study's headline: proxy, trials, compute, best trial."""
    proxy = s["proxy"]
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items() if n)
    lines = [
        f"Proxy width {proxy.get('hidden_size')} (base {proxy.get('base_hidden_size')}, "
        f"{proxy.get('parametrization')}); sampler {s['sampler']}, seed {s['seed']}; "
        f"objective {s['objective']}; {_n(len(s['trials']), 'trial')} ({counts or 'none yet'}).",
        f"Tuning compute: {_cost(s['tuning_core_seconds'])} core-seconds over "
        f"{_n(s['tuning_runs'], 'trial run')}.",
    ]
    best = s["best"]
    if best is None:
        return lines + ["Best trial: none completed yet."]
    return lines + [
        f"Best trial: {best['number']} (`{best['label']}`), {s['objective']} "
        f"{best['value']:.4f}: {_params(best['params'])}."
    ]


def study_section(s: dict, slice_png: str) -> list[str]:
    """report.md's part for one study: headline, top trials, importance, slice plot."""
    keys = list(s["space"]) or sorted({k for t in s["trials"] for k in t["params"]})
    header = ["trial", "state", s["objective"], *keys, "core-s"]
    body = [[str(t["number"]), t["state"], fmt(t["value"], ".4f"),
             *[fmt(t["params"].get(k), ".4g") for k in keys], _cost(t["core_seconds"])]
            for t in s["trials"][:TOP]]  # fmt: skip
    lines = [f"### Study `{s['study']}`", "", *study_lines(s), ""]
    if body:
        lines += [
            f"Top {_n(min(TOP, len(body)), 'trial')}, best first:",
            "",
            markdown_table(header, body),
        ]
    lines += ["", "Hyperparameter importance (PED-ANOVA over the complete trials):", ""]
    if s["importance"] is not None:
        rows = [[k, f"{v:.3f}"] for k, v in s["importance"].items()]
        lines += [markdown_table(["hyperparameter", "importance"], rows), ""]
    if s["importance_note"]:
        lines += [f"- {s['importance_note']}", ""]
    return lines + [f"![slice plot of {s['study']}]({slice_png})", ""]


TRANSFER_HEADER = ["width", "recipe", "runs", "tuned at width", "parametrization", "val/loss"]
TRANSFER_HEADER += ["seeds", "training core-s", "tuning core-s", "total core-s"]


def transfer_rows(table: dict) -> list[list[str]]:
    cells = []
    for w in table["widths"]:
        for row in w["rows"]:
            loss = (
                "—"
                if row["loss_mean"] is None
                else f"{row['loss_mean']:.4f} ± {row['loss_std']:.4f}"
            )
            seeds = f"{row['n_seeds']}/{row['n_runs']}"
            seeds += f" ({row['n_diverged']} diverged)" if row["n_diverged"] else ""
            recipe = (
                f"transferred from {row['study']}"
                if row["kind"] == "transferred"
                else f"tuned here: {row['study']}"
            )
            cells.append([str(w["width"]), recipe, row["runs"], fmt(row["tuned_at_width"], "d"),
                          row["parametrization"], loss, seeds, _cost(row["training_core_seconds"]),
                          _cost(row["tuning_core_seconds"]), _cost(row["total_core_seconds"])])  # fmt: skip
    return cells


_TRANSFER_NOTE = (
    "Per target width: the final val/loss of each recipe (mean ± population std over the "
    "seeds that completed; seeds = completed/runs), the compute it took to train those runs "
    "and to tune the recipe (the study's trials), in core-seconds from the runs' own "
    "result.json. A transferred recipe was tuned on the narrow proxy; a row 'tuned here' "
    "is a study whose proxy is that width (its own transfer runs there, else its best "
    "trial's run). The same numbers are in `studies.json`."
)


def markdown(studies: list[dict], transfers: list[dict], notes: list[str], pngs: dict) -> list[str]:
    """report.md's "Studies" and "Transfers" sections (none without either)."""
    lines = [f"- {n}" for n in notes] + ([""] if notes else [])
    if studies:
        lines += ["## Studies", ""]
        for s in studies:
            lines += study_section(s, pngs[s["study"]])
    if transfers:
        lines += ["## Transfers: tune small, train big", "", _TRANSFER_NOTE, ""]
        for t in transfers:
            where = (
                f"tuned at width {t['proxy_width']}"
                if t["study_found"]
                else "study not in this folder"
            )
            lines += [f"### `{t['group']}` (from study `{t['study']}`, {where})", ""]
            lines += [markdown_table(TRANSFER_HEADER, transfer_rows(t)), ""]
    return lines


def text(studies: list[dict], transfers: list[dict]) -> str:
    """What the CLI prints: each study's headline, each transfer's table."""
    lines = []
    for s in studies:
        lines += ["", f"Study {s['study']}", *study_lines(s)]
    for t in transfers:
        lines += ["", f"Transfer {t['group']}", markdown_table(TRANSFER_HEADER, transfer_rows(t))]
    return "\n".join(lines)
