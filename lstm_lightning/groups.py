"""What an experiment group is: its structure and the checks every definitions file passes.

A group is a dict with exactly two keys; each sub-experiment is one run, described by
its overrides of a base config::

    {"name": "experiment_group_name",
     "subexperiments": [{"label": "unique_label",
                         "overrides": {"learning_rate": 1e-3, "hidden_size": 32}}]}

Names and labels become folders (``<runs_dir>/<group name>/<label>/``) and SLURM job
names, so they are safe folder names (``check_structure``), and labels are unique across
the groups selected together (``check_unique_labels``). The definitions themselves, their
utilities and the selection live in ``experiments``.
"""

from __future__ import annotations

import re
from typing import Any

from lstm_lightning.errors import ConfigError, did_you_mean

Group = dict[str, Any]

GROUP_KEYS = ("name", "subexperiments")
SUBEXPERIMENT_KEYS = ("label", "overrides")
SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}")
SAFE_CHARS = "letters, digits and . _ + - (not starting with . or -, at most 128 characters)"


# --- structure checks -----------------------------------------------------------------


def check_structure(group: Any) -> None:
    """Raise ``ValueError`` (a ``ConfigError``) unless ``group`` has the seed's structure.

    A dict with exactly ``name`` (a safe folder name) and ``subexperiments`` (a non-empty
    list); each sub-experiment a dict with exactly ``label`` (a safe folder name) and
    ``overrides`` (a dict with str keys).

    >>> check_structure({"name": "G", "subexperiments": [{"label": "a", "overrides": {}}]})
    >>> check_structure({"name": "G", "subexperiments": [{"label": "a", "override": {}}]})
    Traceback (most recent call last):
    ...
    lstm_lightning.errors.ConfigError: group 'G', sub-experiment 0 (label 'a'): unknown key 'override' (did you mean overrides?); a sub-experiment has exactly the keys label, overrides
    """
    _check_keys(group, GROUP_KEYS, "an experiment group", "experiment group")
    name = group["name"]
    _check_safe_name(name, "experiment group: name")
    where = f"group {name!r}"
    subs = group["subexperiments"]
    if not isinstance(subs, list) or not subs:
        raise ConfigError(
            f"{where}: subexperiments must be a non-empty list of "
            f"{{'label': ..., 'overrides': {{...}}}} dicts, got {subs!r:.60}"
        )
    for i, sub in enumerate(subs):
        _check_subexperiment(sub, f"{where}, sub-experiment {i}")


def _check_subexperiment(sub: Any, where: str) -> None:
    label = sub.get("label") if isinstance(sub, dict) else None
    if isinstance(label, str):
        where = f"{where} (label {label!r})"
    _check_keys(sub, SUBEXPERIMENT_KEYS, "a sub-experiment", where)
    _check_safe_name(label, f"{where}: label")
    overrides = sub["overrides"]
    if not isinstance(overrides, dict):
        raise ConfigError(
            f"{where}: overrides must be a dict such as {{'learning_rate': 0.01}}, "
            f"got {type(overrides).__name__}"
        )
    bad = [k for k in overrides if not isinstance(k, str) or not k]
    if bad:
        raise ConfigError(
            f"{where}: override keys must be non-empty strings (an alias such as "
            f"'learning_rate' or a path such as 'trainer.max_steps'), got {bad[0]!r}"
        )


def _check_keys(obj: Any, keys: tuple[str, ...], what: str, where: str) -> None:
    """``obj`` is a dict with exactly ``keys``; the error names the first problem."""
    allowed = ", ".join(keys)
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{where}: {what} must be a dict with exactly the keys {allowed}, "
            f"got {type(obj).__name__}"
        )
    for key in obj:
        if key not in keys:
            raise ConfigError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), keys, n=1)}; "
                f"{what} has exactly the keys {allowed}"
            )
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ConfigError(
            f"{where}: missing key {missing[0]!r}; {what} has exactly the keys {allowed}"
        )


def _check_safe_name(name: Any, where: str) -> None:
    # Names become folders (<runs_dir>/<group>/<label>) and SLURM job names.
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{where} {name!r} is not a safe folder name; use only {SAFE_CHARS}")


def check_unique_labels(groups: Group | list[Group]) -> None:
    """Raise ``ValueError`` (a ``ConfigError``) naming every label used more than once.

    Labels must be unique across everything selected together, since the runner and
    the report identify a run by its label.

    >>> a = {"name": "A", "subexperiments": [{"label": "x", "overrides": {}}]}
    >>> check_unique_labels([a, {"name": "B", "subexperiments": a["subexperiments"]}])
    Traceback (most recent call last):
    ...
    lstm_lightning.errors.ConfigError: duplicate labels: 'x' (in groups A, B); labels must be unique across the selected groups: rename one, or drop one group or run (subset_experiments)
    """
    groups = as_list(groups)
    for group in groups:
        check_structure(group)
    seen: dict[str, list[str]] = {}
    for group in groups:
        for sub in group["subexperiments"]:
            seen.setdefault(sub["label"], []).append(group["name"])
    dups = [
        f"{label!r} (in groups {', '.join(names)})"
        for label, names in seen.items()
        if len(names) > 1
    ]
    if dups:
        raise ConfigError(
            f"duplicate labels: {'; '.join(dups)}; labels must be unique across the selected "
            "groups: rename one, or drop one group or run (subset_experiments)"
        )


def as_list(groups: Group | list[Group]) -> list[Group]:
    """One group or a list of groups, as a list."""
    return [groups] if isinstance(groups, dict) else list(groups)


def make_group(name: str, subs: list[dict[str, Any]]) -> Group:
    """The group ``{"name": name, "subexperiments": subs}``, checked as it is made: a
    derived label can grow past 128 characters, or two derived labels collide (two rates
    equal to 6 digits, a repeated seed), and that is an error here, not in the sweep."""
    group = {"name": name, "subexperiments": subs}
    check_structure(group)
    check_unique_labels(group)
    return group
