"""``cli.py transfer``: carry a study's best hyperparameters from the proxy to wide models.

μTransfer's second step ("Tensor Programs V", Yang et al. 2022): ``cli.py tune`` searched
on a narrow proxy; this takes the best COMPLETE trial of the study (lowest objective, as
the study minimizes; ties: the lower trial number) and trains it at the target widths,
without tuning there. The study is ``<runs_dir>/<study>/``: ``study.yaml`` (its
definition: base config text, objective, the proxy's ``hidden_size``,
``base_hidden_size`` and ``parametrization``) and ``study.journal`` (Optuna's journal).

The runs form one experiment group, ``<study>.transfer``, one run per width and seed
(label ``w<width>_seed<seed>``), whose overrides are the trial's params (keys as the
space's), ``hidden_size``, ``seed``, and the proxy's ``base_hidden_size`` and
``parametrization`` (or ``--parametrization``): muP's multipliers are relative to the base
width the values were tuned at, so it stays the proxy's. The group runs through the
sweep runner (``sweep.prepare_groups``, ``sweep.run_prepared``): shards, workers,
resume, locks, refusals and ``cli.py report`` as for any sweep.

It also writes ``<runs_dir>/<study>/best.yaml``: the same values as a config fragment
(nested ``model:``/``data:``/``trainer:`` keys, ``seed_everything``), for
``cli.py fit --config BASE.yaml --config best.yaml --model.hidden_size 1024``; and
``--from_file best.yaml`` transfers such a file without its study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import optuna
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from lstm_lightning import sweep
from lstm_lightning import workers as pool
from lstm_lightning.config_hash import ARGUMENTS, flatten
from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.files import write_atomic
from lstm_lightning.groups import check_structure
from lstm_lightning.parametrization import Parametrization
from lstm_lightning.runs import resolve_key, set_path

DEFINITION, JOURNAL, BEST = "study.yaml", "study.journal", "best.yaml"
SECTIONS = ("model", "data", "trainer", "seed_everything")  # what best.yaml may hold
PROXY_KEYS = ("hidden_size", "base_hidden_size", "parametrization")  # study.yaml's proxy


@dataclass
class Recipe:
    """What a transfer carries: a name, the tuned overrides, and where they came from."""

    name: str  # the study, or best.yaml's stem
    overrides: dict[str, Any]  # override keys (aliases or paths) -> tuned values
    base: dict | None = None  # the study's base config; None: --config's
    header: str = ""  # best.yaml's comment: the study, its trial and objective


# --- the recipe: from a study or from best.yaml ---------------------------------------------


def from_study(runs_dir: Path, name: str) -> Recipe:
    """The best complete trial of study ``name`` in ``runs_dir``, with its proxy."""
    folder = runs_dir / name
    if not (folder / DEFINITION).is_file():
        known = sorted(p.parent.name for p in runs_dir.glob(f"*/{DEFINITION}"))
        hint = did_you_mean(name, known) or (
            f" (studies there: {', '.join(known)})" if known else ""
        )
        raise ConfigError(
            f"--study {name}: no study in {folder} (no {DEFINITION}){hint}; run cli.py tune "
            "--study NAME first, or give the --runs_dir it used"
        )
    try:
        definition = yaml.safe_load((folder / DEFINITION).read_text(encoding="utf-8"))
        proxy = definition["proxy"]
        proxy = {key: proxy[key] for key in PROXY_KEYS}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{folder / DEFINITION}: not a study definition ({type(err).__name__}: {err}); "
            "cli.py tune writes it"
        ) from None
    trial = best_trial(folder, name)
    overrides = {
        **trial.params,
        "base_hidden_size": proxy["base_hidden_size"],
        "parametrization": proxy["parametrization"],
    }
    objective = definition.get("objective", "val/loss")
    header = (
        f"The best trial of study {name}: trial {trial.number}, {objective} {trial.value:.6g}, "
        f"tuned at hidden_size {proxy['hidden_size']} (base_hidden_size "
        f"{proxy['base_hidden_size']}, {proxy['parametrization']})."
    )
    base = yaml.safe_load(definition.get("base_config_text") or "") or {}
    return Recipe(name, overrides, base, header)


def best_trial(folder: Path, name: str) -> FrozenTrial:
    """Optuna's best COMPLETE trial of the study (it minimizes); ConfigError if none."""
    path = folder / JOURNAL
    if not path.is_file():
        raise ConfigError(f"--study {name}: {path} is missing; the study has no trials yet")
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=JournalStorage(backend))
    except KeyError:
        raise ConfigError(f"--study {name}: {path} holds no study named {name}") from None
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        raise ConfigError(
            f"--study {name}: no complete trial yet ({len(trials)} trial(s), none complete); "
            "run cli.py tune on it until one completes"
        )
    return min(done, key=lambda t: (t.value, t.number))


def read_best(path: str) -> Recipe:
    """A best.yaml (or any such fragment): its keys become the overrides."""
    where = f"--from_file {path}"
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{where}: cannot read it ({' '.join(str(err).split())})") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{where}: not a mapping of config keys (model:, data:, ...)")
    overrides = {}
    for key, value in flatten(tree).items():
        section = key.split(".")[0]
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown key {key}{did_you_mean(section, SECTIONS)}; a fragment "
                f"holds only {', '.join(SECTIONS)}"
            )
        if section in ("model", "data") and key not in ARGUMENTS:
            raise ConfigError(f"{where}: unknown key {key}{did_you_mean(key, ARGUMENTS)}")
        overrides["seed" if key == "seed_everything" else key] = value
    return Recipe(Path(path).stem, overrides)


# --- what it builds and writes --------------------------------------------------------------


def int_list(text: str, flag: str, low: int = 1) -> list[int]:
    """``"256,512"`` -> [256, 512]; ConfigError unless each is a whole number >= ``low``."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if not values or any(v < low for v in values):
        what = "positive integers" if low == 1 else f"integers >= {low}"
        raise ConfigError(f"{flag} {text}: give {what} separated by commas, e.g. {low},{low + 1}")
    return list(dict.fromkeys(values))  # once each, in the order given


def transfer_group(
    recipe: Recipe, widths: list[int], seeds: list[int], parametrization: str | None
) -> dict:
    """The experiment group ``<name>.transfer``: one run per width and seed."""
    extra = {"parametrization": parametrization} if parametrization else {}
    group = {
        "name": f"{recipe.name}.transfer",
        "subexperiments": [
            {
                "label": f"w{width}_seed{seed}",
                "overrides": {**recipe.overrides, **extra, "hidden_size": width, "seed": seed},
            }
            for width in widths
            for seed in seeds
        ],
    }
    check_structure(group)
    return group


def fragment(recipe: Recipe) -> str:
    """best.yaml's text: a comment header, then the overrides as nested config keys."""
    tree: dict = {}
    for key, value in recipe.overrides.items():
        set_path(tree, resolve_key(key, BEST), value)
    usage = "python cli.py fit --config BASE.yaml --config best.yaml --model.hidden_size 1024"
    header = "".join(f"# {line}\n" for line in (recipe.header, f"Use it as: {usage}") if line)
    return header + yaml.safe_dump(tree, sort_keys=True)


def main(
    *,
    study: str | None = None,
    from_file: str | None = None,
    widths: str = "256,512",
    seeds: str = "0,1,2",
    parametrization: str | None = None,
    config: str | None = None,
    runs_dir: str = "runs",
    workers: str = "auto",
    job_id: int | None = None,
    total_jobs: int | None = None,
    dry_run: bool = False,
) -> int:
    """Train a study's best trial at wider widths, and write its best.yaml.

    Args:
        study: The study (cli.py tune --study) whose best complete trial to carry.
        from_file: Instead of --study: a best.yaml (a config fragment) to carry.
        widths: Target widths (model.hidden_size), comma-separated.
        seeds: Run seeds (seed_everything), comma-separated: one run per width and seed.
        parametrization: sp or mup; default: the study's (the proxy's).
        config: The base config; default: the study's (with --from_file: configs/sweep.yaml).
        runs_dir: Where the study is and the runs go: <runs_dir>/<study>.transfer/<label>/.
        workers: Runs at once on this machine, as for cli.py sweep: a number or auto.
        job_id: This shard (0-based), as for cli.py sweep.
        total_jobs: Number of shards, as for cli.py sweep.
        dry_run: Print the runs (and best.yaml) and exit; writes nothing.
    """
    if (study is None) == (from_file is None):
        raise ConfigError("give --study NAME (a study of cli.py tune) or --from_file best.yaml")
    if parametrization is not None and parametrization not in get_args(Parametrization):
        raise ConfigError(
            f"--parametrization {parametrization}: use sp or mup"
            f"{did_you_mean(parametrization, get_args(Parametrization))}"
        )
    requested = pool.parse_workers(workers)
    width_list, seed_list = int_list(widths, "--widths"), int_list(seeds, "--seeds", low=0)
    where = sweep.check_runs_dir(runs_dir)
    recipe = from_study(where, study) if study is not None else read_best(from_file)
    base = sweep.base_config(config) if config or recipe.base is None else recipe.base
    group = transfer_group(recipe, width_list, seed_list, parametrization)
    selection = sweep.Selection(runs_dir=runs_dir)
    placement = sweep.Placement(job_id=job_id, total_jobs=total_jobs)
    runs, job, total = sweep.prepare_groups([group], base, selection, placement)
    best = fragment(recipe)
    if dry_run:
        print(f"{BEST} of {recipe.name}:\n{best}")
    elif study is not None:
        write_atomic(where / study / BEST, best)
    return sweep.run_prepared(runs, job, total, requested, runs_dir, dry_run)
