"""Experiment definitions: named groups of labelled override sets, as plain data.

A group is a dict with exactly two keys (``groups``: the format and its checks); each
sub-experiment is one run, described by its overrides of a base config (the sweep runner
maps flat aliases such as ``learning_rate`` or dotted paths such as ``trainer.max_steps``
to config keys)::

    {"name": "experiment_group_name",
     "subexperiments": [{"label": "unique_label",
                         "overrides": {"learning_rate": 1e-3, "hidden_size": 32}}]}

A run's results live under ``<runs_dir>/<group name>/<label>/``, so names and labels
are folder names: only ``[A-Za-z0-9._+-]``, not starting with ``.`` or ``-``, at most
128 characters (``check_structure``). Labels are unique across every group selected
together (``check_unique_labels``): a selection in which two groups share a label is
refused, even when their overrides are identical. Across this package's groups
(``GROUPS``, the registry ``--experiments`` picks from) a label always means the same
run; ``LSTM_LR_EXPERIMENTS`` repeats the eight width-64 runs of ``LSTM_ADAM_MUP_SCALING``
under the same labels, so sweep those two separately. Any other two go together.

The groups below are sized for a laptop CPU at the runner's default budget (about 300
steps of 32 x 64 tokens: ~2 s a run at width 16, ~5 s at width 64). To scale them up on a
cluster, keep the groups and give the runner a base config with a larger
``trainer.max_steps``, or build bigger groups with the utilities, e.g. three seeds of a
sweep at larger widths:

>>> wide = {"name": "WIDE", "subexperiments": [
...     {"label": f"lstm_{w}d_adam_mup", "overrides": {"hidden_size": w}} for w in (256, 1024)]}
>>> big = create_multi_seed_experiments(
...     generate_lr_sweep_experiment(wide, ADAM_LR_SWEEP), seeds=(0, 1, 2))
>>> big["name"], len(big["subexperiments"])
('WIDE_lr_sweep', 48)
>>> big["subexperiments"][0]
{'label': 'lstm_256d_adam_mup_lr0.00195312_s0', 'overrides': {'hidden_size': 256, 'learning_rate': 0.001953125, 'seed': 0}}

Module-level groups are shared: treat them as read-only. Every utility returns new
dicts (deep copies) and never mutates its inputs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The seed's utilities (``derive``); re-exported because users and definitions files
# import them from here.
from lstm_lightning.derive import create_multi_lr_experiments as create_multi_lr_experiments
from lstm_lightning.derive import create_multi_seed_experiments as create_multi_seed_experiments
from lstm_lightning.derive import generate_lr_sweep_experiment as generate_lr_sweep_experiment
from lstm_lightning.derive import subset_experiments as subset_experiments
from lstm_lightning.errors import ConfigError, did_you_mean

# The group format (``groups``); its names are re-exported (``X as X``) because
# definitions files and slurm import them from here.
from lstm_lightning.groups import GROUP_KEYS as GROUP_KEYS
from lstm_lightning.groups import SAFE_CHARS as SAFE_CHARS
from lstm_lightning.groups import SAFE_NAME as SAFE_NAME
from lstm_lightning.groups import SUBEXPERIMENT_KEYS as SUBEXPERIMENT_KEYS
from lstm_lightning.groups import Group, check_structure, check_unique_labels, make_group

# --- learning-rate sweeps --------------------------------------------------------------
# Powers of two, so every width's sweep hits the same grid and optima compare exactly.
# Adam does best near 2^-6..2^-4 (width 128); SGD (momentum 0.9) under muP near 2^2..2^3
# at widths 16 and 64 (measured: python cli.py sweep on LSTM_SGD_MUP_SCALING, 300 steps;
# lr 8 beat 4 and 16 at both widths). Each optimizer's sweep brackets its optimum with
# rates either side, so the optimum stays inside as SP's optimum drifts with width.

ADAM_LR_SWEEP = tuple(2.0**k for k in range(-9, -1))  # 2^-9 .. 2^-2, 8 rates
SGD_LR_SWEEP = tuple(2.0**k for k in range(-3, 5))  # 2^-3 .. 2^4, 8 rates
STANDARD_LR_SWEEP = tuple(2.0**k for k in range(-9, 5))  # 2^-9 .. 2^4, 14: both above
NARROW_LR_SWEEP = tuple(2.0**k for k in range(-7, -2))  # 2^-7 .. 2^-3, 5: Adam quick check

LR_SWEEPS = {"adam": ADAM_LR_SWEEP, "sgd": SGD_LR_SWEEP}


# --- groups ------------------------------------------------------------------------------

SCALING_WIDTHS = (16, 24, 32, 48, 64)  # laptop-sized: ~2-5 s a run at 300 steps
TRANSFER_WIDTHS = (16, 32, 64, 128)  # 8x: enough to see SP's optimum drift


def width_group(name: str, optimizer: str, parametrization: str, widths: Iterable[int]) -> Group:
    """One sub-experiment per width, labelled ``lstm_{width}d_{optimizer}_{parametrization}``.

    >>> width_group("G", "sgd", "mup", [16])
    {'name': 'G', 'subexperiments': [{'label': 'lstm_16d_sgd_mup', 'overrides': {'hidden_size': 16, 'optimizer': 'sgd', 'parametrization': 'mup'}}]}
    """
    subs = [
        {
            "label": f"lstm_{w}d_{optimizer}_{parametrization}",
            "overrides": {
                "hidden_size": w,
                "optimizer": optimizer,
                "parametrization": parametrization,
            },
        }
        for w in widths
    ]
    return make_group(name, subs)


def scaling_group(name: str, optimizer: str, parametrization: str, widths: Iterable[int]) -> Group:
    """``width_group`` swept over the optimizer's learning rates (``LR_SWEEPS``)."""
    base = width_group(name, optimizer, parametrization, widths)
    return generate_lr_sweep_experiment(base, LR_SWEEPS[optimizer], name=name)


# 5 widths x 8 rates = 40 runs each; about 2-3 minutes each on a laptop CPU.
LSTM_SGD_MUP_SCALING = scaling_group("LSTM_SGD_MUP_SCALING", "sgd", "mup", SCALING_WIDTHS)
LSTM_SGD_SP_SCALING = scaling_group("LSTM_SGD_SP_SCALING", "sgd", "sp", SCALING_WIDTHS)
LSTM_ADAM_MUP_SCALING = scaling_group("LSTM_ADAM_MUP_SCALING", "adam", "mup", SCALING_WIDTHS)
LSTM_ADAM_SP_SCALING = scaling_group("LSTM_ADAM_SP_SCALING", "adam", "sp", SCALING_WIDTHS)

# The transfer study (docs/results.md): {sgd, adam} x {sp, mup} x widths 16..128 x 8
# rates x 3 seeds = 384 runs. Under muP each optimizer's best rate should stay put
# across widths; under SP it drifts. Seeds vary the init (seed_everything) on one task.
TRANSFER_SEEDS = (0, 1, 2)


def transfer_group(
    name: str, widths: Iterable[int], rates: dict[str, Iterable[float]], seeds: Iterable[int]
) -> Group:
    """{sgd, adam} x {sp, mup} x ``widths`` x ``rates[optimizer]`` x ``seeds``, one group."""
    subs = [
        sub
        for opt in ("sgd", "adam")
        for par in ("sp", "mup")
        for sub in generate_lr_sweep_experiment(width_group(name, opt, par, widths), rates[opt])[
            "subexperiments"
        ]
    ]
    return create_multi_seed_experiments(make_group(name, subs), seeds)


MUP_SCALING_EXPERIMENTS = transfer_group(
    "MUP_SCALING_EXPERIMENTS", TRANSFER_WIDTHS, LR_SWEEPS, TRANSFER_SEEDS
)

# The width extension (docs/results.md): from width 16 to 128, SP's best lr moved 0.7
# octaves under SGD and 1.98 under Adam, too little to meet the study's bar (SP drift
# >= 2), so this adds width 256 to both: SP and muP, one seed, the six rates around
# both parametrizations' optima (24 runs, ~45 s each on one core). Run it into the
# study's runs folder: the report joins it to the panels.
WIDTH_EXTENSION_RATES = {"sgd": SGD_LR_SWEEP[2:], "adam": ADAM_LR_SWEEP[1:7]}
WIDTH_EXTENSION = transfer_group("WIDTH_EXTENSION", [256], WIDTH_EXTENSION_RATES, (0,))

# A plain learning-rate sweep at one width (Adam, muP): 12 runs, about a minute.
LSTM_LR_EXPERIMENTS = generate_lr_sweep_experiment(
    width_group("LSTM_LR_EXPERIMENTS", "adam", "mup", [64]),
    STANDARD_LR_SWEEP,
    name="LSTM_LR_EXPERIMENTS",
)

# The registry of this package's groups, by name: what --experiments NAME[,NAME] picks
# from when no --definitions file is given (named_groups). A new group goes here.
GROUPS: dict[str, Group] = {
    group["name"]: group
    for group in (
        LSTM_SGD_MUP_SCALING,
        LSTM_SGD_SP_SCALING,
        LSTM_ADAM_MUP_SCALING,
        LSTM_ADAM_SP_SCALING,
        MUP_SCALING_EXPERIMENTS,
        WIDTH_EXTENSION,
        LSTM_LR_EXPERIMENTS,
    )
}

# The default the runner uses (the seed's EXPERIMENTS; change it here or pick by name).
EXPERIMENTS = LSTM_SGD_MUP_SCALING


# --- selection (the sweep's --definitions, --experiments, --labels) ---------------------


def load_definitions(path: str | None):
    """This module, or a user's definitions module loaded from ``path``.

    A definitions file is Python and is executed: load only files you trust. Any
    fault in it (missing, a folder, a syntax error, an exception) is one ``ConfigError``
    line naming the file and, where known, the line.
    """
    if path is None:
        return sys.modules[__name__]
    if os.path.isdir(path):
        raise ConfigError(f"--definitions: {path} is a directory, not a Python file")
    if not os.path.isfile(path):
        raise ConfigError(f"--definitions: {path} does not exist")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None:  # no loader for the suffix (e.g. defs.yaml)
        raise ConfigError(f"--definitions: {path} is not a Python file (.py)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a user's file: report any error as one line
        raise ConfigError(f"--definitions: {_import_fault(path, err)}") from None
    return module


def _import_fault(path: str, err: Exception) -> str:
    """'<file>, line N: failed to import: <Type>: <message>' on one line."""
    where, message = path, str(err)
    if isinstance(err, SyntaxError):
        where, message = err.filename or path, err.msg
        line = err.lineno
    else:  # the deepest frame in the definitions file itself
        mine = os.path.realpath(path)
        frames = traceback.extract_tb(err.__traceback__)
        lines = [f.lineno for f in frames if os.path.realpath(f.filename) == mine]
        line = lines[-1] if lines else None
    at = f", line {line}" if line else ""
    message = " ".join(message.split())  # one line, whatever the exception says
    return f"{where}{at}: failed to import: {type(err).__name__}: {message}"


def as_groups(value: Any) -> list[dict]:
    """A group or a list of groups, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def named_groups(module) -> dict[str, list[dict]]:
    """Every group a module names: this package's ``GROUPS`` registry, or for a user's
    module every upper-case variable holding a group or a list of groups, by variable
    name and (a single group) by its ``name`` field."""
    if module is sys.modules[__name__]:
        return {name: [group] for name, group in GROUPS.items()}
    found: dict[str, list[dict]] = {}
    for attr, value in vars(module).items():
        groups = as_groups(value)
        if (
            attr.isupper()
            and groups
            and all(isinstance(g, dict) and "subexperiments" in g for g in groups)
        ):
            found[attr] = groups
            if len(groups) == 1 and isinstance(groups[0].get("name"), str):
                found.setdefault(groups[0]["name"], groups)
    return found


def select(module, experiments: str | None, labels: str | None) -> list[dict]:
    """The groups to run: ``EXPERIMENTS``, or the named ones, cut to ``labels``."""
    if experiments:
        available = named_groups(module)
        groups = []
        for name in experiments.split(","):
            if name not in available:
                raise ConfigError(
                    f"--experiments: no group named {name!r}{did_you_mean(name, available)}; "
                    f"available: {', '.join(sorted(available))}"
                )
            groups += available[name]
    else:
        if not hasattr(module, "EXPERIMENTS"):
            raise ConfigError(
                "the definitions define no EXPERIMENTS; set it or pass --experiments NAME"
            )
        groups = as_groups(module.EXPERIMENTS)
    for group in groups:
        _teach(check_structure, group)
    if labels:
        groups = _teach(subset_experiments, groups, set(labels.split(",")))
    _teach(check_unique_labels, groups)
    return groups


def _teach(fn, *args):
    """Run a definitions check; its ValueError becomes the one-line ConfigError."""
    try:
        return fn(*args)
    except ValueError as err:
        raise ConfigError(str(err)) from None
