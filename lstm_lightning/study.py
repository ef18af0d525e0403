"""A study as data: its definition (``study.yaml``), its journal, each trial's params and
the claim that makes one process work on each trial (see ``tune``).
"""

from __future__ import annotations

import hashlib
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from filelock import FileLock, Timeout
from optuna.samplers import BaseSampler, PartialFixedSampler, RandomSampler, TPESampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from lstm_lightning import runs as folders
from lstm_lightning.config_checks import one_line
from lstm_lightning.config_hash import changes, config_hash
from lstm_lightning.errors import ConfigError
from lstm_lightning.files import write_atomic
from lstm_lightning.fit import parser_only
from lstm_lightning.groups import SAFE_CHARS, SAFE_NAME
from lstm_lightning.runs import Run
from lstm_lightning.space import Choice, FloatRange, IntRange, Space
from lstm_lightning.sweep import base_config, check_runs_dir

JOURNAL, DEFINITION, ASK_LOCK, CLAIM = "study.journal", "study.yaml", ".ask.lock", ".trial.lock"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
# What a rerun must share with the study it reopens (the base config by its hash).
COMPARED = ("space", "sampler", "seed", "objective", "transfer", "proxy")
FLAGS = ("sampler", "seed", "objective")  # of COMPARED, those a flag sets to one value
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73)


def label(number: int) -> str:
    return f"trial_{number:04d}"


@dataclass(frozen=True)
class Spec:
    """A study as ``cli.py tune`` is given it; picklable, for worker processes."""

    config: str
    space: str
    study: str
    trials: int
    sampler: str  # its default is cli.py tune's (tune.main)
    seed: int = 0
    objective: str = "val/loss"
    runs_dir: str = "runs"
    transfer: bool = True

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir) / self.study


@dataclass
class Setup:
    """A spec checked: its space, base config, fit's parser and the study's definition."""

    spec: Spec
    space: Space
    base: dict
    parser: Any
    probe: Run  # the base config resolved as a run: its cost, and the proxy's width
    definition: dict


# --- the study's definition ---------------------------------------------------------------


def prepare(spec: Spec) -> Setup:
    """Check the name, the space and the base config (the parser of ``cli.py fit``, as the
    sweep resolves a run); writes nothing. ConfigError on the first problem."""
    if not SAFE_NAME.fullmatch(spec.study):
        raise ConfigError(f"--study {spec.study!r}: it names a folder, so use only {SAFE_CHARS}")
    check_runs_dir(spec.runs_dir)
    space = Space.from_file(spec.space, transfer=spec.transfer)
    base = base_config(spec.config)
    setup = Setup(spec, space, base, parser_only(), Run(spec.study, "base", {}), {})
    resolve_run(setup.probe, setup, "--config")
    model = yaml.safe_load(setup.probe.text)["model"]  # plain values, not restricted types
    setup.definition = {
        "study": spec.study,
        "base_config": spec.config,
        "base_config_text": setup.probe.text,
        "space": yaml.safe_load(Path(spec.space).read_text(encoding="utf-8")),
        "sampler": spec.sampler,
        "seed": spec.seed,
        "objective": spec.objective,
        "transfer": spec.transfer,
        "proxy": {k: model[k] for k in ("hidden_size", "base_hidden_size", "parametrization")},
    }
    return setup


def resolve_run(run: Run, setup: Setup, where: str | None = None) -> None:
    """``runs.resolve`` with every error one ConfigError line naming ``where`` or the run."""
    try:
        folders.resolve(run, setup.parser, setup.base, Path(setup.spec.runs_dir))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}" if where else str(err)) from None
    except Exception as err:  # jsonargparse's ArgumentError or a type error
        raise ConfigError(f"{where or run.name}: {one_line(err)}") from None


def check_definition(setup: Setup) -> None:
    """Write ``study.yaml`` for a new study; refuse a rerun whose definition differs."""
    path = setup.spec.folder / DEFINITION
    new = yaml.safe_load(yaml.safe_dump(setup.definition, sort_keys=False))
    if not path.exists():
        write_atomic(path, yaml.dump(new, Dumper=_Readable, sort_keys=False))
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # A flag's old value says how to continue the study (e.g. one begun under another
    # default sampler): "sampler (random: pass --sampler random to continue it)".
    differs = [
        f"{k} ({old.get(k)}: pass --{k} {old.get(k)} to continue it)" if k in FLAGS else k
        for k in COMPARED
        if old.get(k) != new[k]
    ]
    text = old.get("base_config_text") or ""
    if config_hash(text) != config_hash(new["base_config_text"]):
        differs.insert(0, f"base config{changes(text, new['base_config_text'])}")
    if differs:
        raise ConfigError(
            f"{path}: study {setup.spec.study} was created with a different "
            f"{', '.join(differs)}; give a new --study name, or delete {setup.spec.folder} "
            "to start it over"
        )


class _Readable(yaml.SafeDumper):
    """PyYAML's safe dumper, writing a multi-line string (the base config) as a block."""

    def represent_str(self, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Readable.add_representer(str, _Readable.represent_str)


class Handle:
    """The study in its journal, opened by this process."""

    def __init__(self, setup: Setup):
        self.setup, folder = setup, setup.spec.folder
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / JOURNAL)
        # The open-lock works on NFS (a file created with O_EXCL), unlike a symlink lock.
        self.storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=setup.spec.study,
            storage=self.storage,
            direction="minimize",
            load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(setup.spec.study)

    def counts(self) -> dict[str, int]:
        trials = self.study.get_trials(deepcopy=False)
        return {
            "finished": sum(t.state in FINISHED for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
        }

    def set_attr(self, number: int, key: str, value: Any) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_user_attr(trial_id, key, value)


# --- sampling -------------------------------------------------------------------------------


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s own sampler: the same whoever asks it."""
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sampler_for(kind: str, seed: int, number: int, space: Space) -> BaseSampler:
    own = trial_seed(seed, number)
    if kind == "random":
        return RandomSampler(seed=own)
    if kind == "tpe":
        return TPESampler(seed=own)
    with warnings.catch_warnings():  # experimental since Optuna 2.4, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PartialFixedSampler(halton(space, seed, number), RandomSampler(seed=own))


def halton(space: Space, seed: int, number: int) -> dict[str, Any]:
    """Point ``number`` of a Halton sequence scrambled by ``seed`` (digit permutations that
    keep 0, then a random shift per dimension), mapped onto the space."""
    if len(space) > len(PRIMES):
        raise ConfigError(f"--sampler qmc: at most {len(PRIMES)} keys, the space has {len(space)}")
    rng, point = random.Random(seed), {}
    for base, (key, dist) in zip(PRIMES, space.items()):
        perm = [0, *rng.sample(range(1, base), base - 1)]
        shift, u, scale, n = rng.random(), 0.0, 1.0 / base, number + 1
        while n:
            n, digit = divmod(n, base)
            u += perm[digit] * scale
            scale /= base
        point[key] = from_unit(dist, (u + shift) % 1.0)
    return point


def from_unit(dist, u: float) -> Any:
    """The value at ``u`` in [0, 1) of a distribution (log ranges in log space)."""
    if isinstance(dist, Choice):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, FloatRange):
        if dist.log:
            value = math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        else:
            value = dist.low + u * (dist.high - dist.low)
        return min(max(value, dist.low), dist.high)
    assert isinstance(dist, IntRange)
    if dist.log:
        low, high = math.log(dist.low - 0.5), math.log(dist.high + 0.5)
        return min(max(round(math.exp(low + u * (high - low))), dist.low), dist.high)
    count = (dist.high - dist.low) // dist.step + 1
    return dist.low + min(int(u * count), count - 1) * dist.step


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's params, keyed as the space, drawn by the study's sampler."""
    for key, dist in space.items():
        if isinstance(dist, FloatRange):
            trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntRange):
            trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            trial.suggest_categorical(key, list(dist.choices))
    return {key: trial.params[key] for key in space}


def preview(space: Space, kind: str, seed: int, number: int) -> dict[str, Any]:
    """Trial ``number``'s params as the study would draw them (tpe: before its history
    counts), asked of a throwaway study in memory."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    study.sampler = sampler_for(kind, seed, number, space)
    return suggest(trial, space)


# --- claiming a trial ---------------------------------------------------------------------


@dataclass
class Claim:
    """A trial this process works on; ``lock`` (its claim lock) is held until it is told."""

    number: int
    params: dict
    lock: FileLock
    adopted: bool  # a RUNNING trial a dead process left


def hold(trial_dir: Path) -> FileLock | None:
    """The trial's claim lock, taken now, or None when a live process holds it."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(trial_dir / CLAIM)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def claim_next(handle: Handle) -> Claim | None:
    """Under the study's ask lock: an abandoned RUNNING trial, else a new one while
    finished + running < trials; None when the study needs no more from this process."""
    spec, space = handle.setup.spec, handle.setup.space
    with FileLock(spec.folder / ASK_LOCK):
        trials = handle.study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == TrialState.RUNNING:
                lock = hold(spec.folder / label(t.number))
                if lock is not None:
                    return Claim(t.number, dict(t.params), lock, True)
        if sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials) >= spec.trials:
            return None
        trial = handle.study.ask()
        handle.study.sampler = sampler_for(spec.sampler, spec.seed, trial.number, space)
        params = suggest(trial, space)
        trial.set_user_attr("label", label(trial.number))
        lock = hold(spec.folder / label(trial.number))
        assert lock is not None, "a new trial's folder is free"
        return Claim(trial.number, params, lock, False)


def abandoned(handle: Handle) -> bool:
    """Whether a RUNNING trial has no live process (its claim lock is free)."""
    for t in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = hold(handle.setup.spec.folder / label(t.number))
        if lock is not None:
            lock.release()
            return True
    return False
