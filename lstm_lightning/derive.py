"""Groups derived from groups, under the seed's names: a subset by label
(``subset_experiments``), a learning-rate sweep (``generate_lr_sweep_experiment``), one
group per rate (``create_multi_lr_experiments``) and repeats over seeds
(``create_multi_seed_experiments``). ``experiments`` re-exports them.

A derived run is its base run with one override added, and its label grows a suffix
that names it (``_lr{lr:g}``, ``_s{seed}``). A group made here is checked as it is made
(``groups``: safe names, unique labels), so a suffix that pushes a label past 128
characters, or two rates equal to 6 digits, is an error here, not in the sweep. Every
utility returns new dicts (deep copies) and never mutates its inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from numbers import Real
from typing import Any

from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.groups import Group, as_list, check_structure, make_group


def subset_experiments(
    experiments: Group | list[Group], wanted: str | Iterable[str]
) -> Group | list[Group]:
    """Keep only the sub-experiments whose label is in ``wanted``; same shape as given.

    ``experiments`` is one group or a list of groups; groups left empty are dropped.
    ``wanted`` is an iterable of labels (a single str is one label). A wanted label
    found nowhere is an error that suggests close matches.

    >>> g = {"name": "G", "subexperiments": [
    ...     {"label": f"lstm_{w}d_sgd_mup", "overrides": {"hidden_size": w}} for w in (16, 24, 32)]}
    >>> [s["label"] for s in subset_experiments(g, {"lstm_32d_sgd_mup", "lstm_16d_sgd_mup"})["subexperiments"]]
    ['lstm_16d_sgd_mup', 'lstm_32d_sgd_mup']
    >>> subset_experiments([g, {"name": "H", "subexperiments": [{"label": "x", "overrides": {}}]}], {"x"})
    [{'name': 'H', 'subexperiments': [{'label': 'x', 'overrides': {}}]}]
    >>> subset_experiments(g, {"lstm_61d_sgd_mup"})
    Traceback (most recent call last):
    ...
    lstm_lightning.errors.ConfigError: subset_experiments: no sub-experiment labelled 'lstm_61d_sgd_mup' (did you mean lstm_16d_sgd_mup, lstm_32d_sgd_mup, lstm_24d_sgd_mup?)
    """
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    if not wanted:
        raise ConfigError("subset_experiments: no labels wanted; pass a set of labels to keep")
    groups = as_list(experiments)
    _check_wanted_exist(groups, wanted)
    kept = [_keep(group, wanted) for group in groups]
    kept = [group for group in kept if group["subexperiments"]]
    return kept[0] if isinstance(experiments, dict) else kept


def _keep(group: Group, wanted: set[str]) -> Group:
    subs = [s for s in group["subexperiments"] if s["label"] in wanted]
    return {"name": group["name"], "subexperiments": copy.deepcopy(subs)}


def _check_wanted_exist(groups: list[Group], wanted: set[str]) -> None:
    labels = [s["label"] for g in groups for s in g["subexperiments"]]
    missing = sorted(wanted - set(labels))
    if missing:
        raise ConfigError("subset_experiments: " + "; ".join(_missing(m, labels) for m in missing))


def _missing(label: str, labels: list[str]) -> str:
    hint = did_you_mean(label, labels) or f" (no close match among {len(labels)} labels)"
    return f"no sub-experiment labelled {label!r}{hint}"


def generate_lr_sweep_experiment(
    base_experiment: Group, learning_rates: Iterable[float], name: str | None = None
) -> Group:
    """One group holding every sub-experiment of the base at every learning rate.

    Labels are ``f"{label}_lr{lr:g}"`` (``:g`` keeps 6 significant digits; the exact
    rate is in the overrides), ordered label by label so each sweep stays together.
    ``name`` defaults to the base name + ``"_lr_sweep"``. Compare
    ``create_multi_lr_experiments``: the same runs, one group per learning rate.

    >>> base = {"name": "B", "subexperiments": [
    ...     {"label": "lstm_16d", "overrides": {"hidden_size": 16}}]}
    >>> generate_lr_sweep_experiment(base, [0.5, 2.0**-5])
    {'name': 'B_lr_sweep', 'subexperiments': [{'label': 'lstm_16d_lr0.5', 'overrides': {'hidden_size': 16, 'learning_rate': 0.5}}, {'label': 'lstm_16d_lr0.03125', 'overrides': {'hidden_size': 16, 'learning_rate': 0.03125}}]}
    """
    subs = _expand(base_experiment, "learning_rate", (learning_rates, "learning_rates", Real),
                   lambda lr: f"_lr{lr:g}")  # fmt: skip
    return make_group(name or f"{base_experiment['name']}_lr_sweep", subs)


def create_multi_lr_experiments(
    base_experiment: Group, learning_rates: Iterable[float]
) -> list[Group]:
    """A list of groups, one per learning rate, each named ``f"{name}_lr{lr:g}"``.

    Each group holds every base sub-experiment at that rate, labelled as in
    ``generate_lr_sweep_experiment`` (so labels stay unique across the list). Use this to
    run or compare one learning rate at a time; ``generate_lr_sweep_experiment`` makes
    one group holding the whole sweep.

    >>> base = {"name": "B", "subexperiments": [
    ...     {"label": f"lstm_{w}d", "overrides": {"hidden_size": w}} for w in (16, 32)]}
    >>> [(g["name"], [s["label"] for s in g["subexperiments"]])
    ...  for g in create_multi_lr_experiments(base, [0.5, 0.25])]
    [('B_lr0.5', ['lstm_16d_lr0.5', 'lstm_32d_lr0.5']), ('B_lr0.25', ['lstm_16d_lr0.25', 'lstm_32d_lr0.25'])]
    """
    check_structure(base_experiment)
    lrs = _values(learning_rates, "learning_rates", Real)
    return [
        generate_lr_sweep_experiment(
            base_experiment, [lr], name=f"{base_experiment['name']}_lr{lr:g}"
        )
        for lr in lrs
    ]


def create_multi_seed_experiments(
    base_experiment: Group, seeds: Iterable[int], name: str | None = None
) -> Group:
    """One group with every base sub-experiment at every seed, labelled ``f"{label}_s{seed}"``.

    The group keeps the base's name unless ``name`` is given: the seeds are repeats of the
    same study, so their results sit beside it (labels still differ).

    >>> base = {"name": "B", "subexperiments": [
    ...     {"label": "lstm_16d_lr0.5", "overrides": {"learning_rate": 0.5}}]}
    >>> create_multi_seed_experiments(base, seeds=(0, 1))
    {'name': 'B', 'subexperiments': [{'label': 'lstm_16d_lr0.5_s0', 'overrides': {'learning_rate': 0.5, 'seed': 0}}, {'label': 'lstm_16d_lr0.5_s1', 'overrides': {'learning_rate': 0.5, 'seed': 1}}]}
    """
    subs = _expand(base_experiment, "seed", (seeds, "seeds", int), lambda seed: f"_s{seed}")
    return make_group(name or base_experiment["name"], subs)


def _expand(base: Group, key: str, given: tuple, suffix) -> list[dict[str, Any]]:
    """Every sub-experiment of ``base`` times every value of ``key``, in that order, each
    label grown by ``suffix(value)``; ``given`` is ``_values``'s (values, what, kind),
    checked after ``base``."""
    check_structure(base)
    values = _values(*given)
    return [_variant(sub, suffix(v), key, v) for sub in base["subexperiments"] for v in values]


def _values(values: Iterable[Any], what: str, kind: type) -> list[Any]:
    """The values as a non-empty list of ``kind`` (bools refused: True is not a rate)."""
    values = list(values)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, kind)]
    if not values or bad:
        got = f"got {bad[0]!r}" if bad else "got none"
        raise ConfigError(f"{what} must be a non-empty sequence of {kind.__name__} values, {got}")
    return values


def _variant(sub: dict[str, Any], suffix: str, key: str, value: Any) -> dict[str, Any]:
    overrides = copy.deepcopy(sub["overrides"])
    overrides[key] = value
    return {"label": sub["label"] + suffix, "overrides": overrides}
