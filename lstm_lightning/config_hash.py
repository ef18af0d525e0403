"""A run's config hash: what determines its result, and whether two configs differ in it.

A result records ``config_hash`` of the resolved config.yaml it was trained from; a
sweep compares it with the run's config now (``runs.plan``) to skip, resume or refuse.
The hash covers what determines the result, not where the run's folder is
(``LOCATION_KEYS``: a moved runs folder still matches), nor keys added since with their
defaults (``differing`` passes over a key the old config lacks whose value is its
``DEFAULTS``). A result written before this hash holds ``legacy_hash``, of the whole
text: ``same_config`` accepts either.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import yaml

from lstm_lightning.data import SequenceDataModule
from lstm_lightning.module import LanguageModel

# Where a run's files go: they follow runs_dir and change nothing in its result.
LOCATION_KEYS = (
    "trainer.logger.init_args.save_dir",
    "checkpoint.dirpath",
    "trainer.default_root_dir",
)

ARGUMENTS = {  # every model and data argument by its config path
    f"{section}.{name}": param
    for section, cls in (("data", SequenceDataModule), ("model", LanguageModel))
    for name, param in inspect.signature(cls).parameters.items()
}
DEFAULTS = {  # their defaults as a resolved config.yaml holds them (tuples as lists)
    k: json.loads(json.dumps(p.default)) for k, p in ARGUMENTS.items() if p.default is not p.empty
}


def comparable(text: str) -> dict[str, Any]:
    """A resolved config as flat ``{dotted.key: value}``, without its ``LOCATION_KEYS``."""
    flat = flatten(yaml.safe_load(text) or {})
    return {key: value for key, value in flat.items() if key not in LOCATION_KEYS}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        nested = isinstance(value, dict) and value
        flat.update(flatten(value, f"{path}.") if nested else {path: value})
    return flat


def config_hash(text: str) -> str:
    """sha256 of what determines the run's result: its config, wherever its folder is."""
    canonical = json.dumps(comparable(text), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def legacy_hash(text: str) -> str:
    """The hash results written before this version hold: of the whole text, paths too."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def same_config(result: dict, text: str, written: str | None) -> bool:
    """Whether ``result`` was trained from ``text``: its hash (or ``legacy_hash``) is that of
    ``text``, or of the folder's config.yaml ``written`` when ``differing`` finds nothing."""
    if result["config_hash"] in (config_hash(text), legacy_hash(text)):
        return True
    older = (config_hash(written), legacy_hash(written)) if written is not None else ()
    return result["config_hash"] in older and not differing(written, text)


def differing(old: str, new: str) -> list[str]:
    """The flat keys whose values differ (``...``: absent), but for location and keys an
    upgrade added: ones ``old`` lacks whose value in ``new`` is their ``DEFAULTS``."""
    before, after = comparable(old), comparable(new)
    changed = {k for k in {*before, *after} if before.get(k, ...) != after.get(k, ...)}
    return sorted(k for k in changed if k in before or DEFAULTS.get(k, ...) != after[k])


def changes(old: str | None, new: str) -> str:
    """' (key old -> new, ...)': up to three keys that differ, or '' when unknown."""
    if old is None:
        return ""
    before, after, keys = comparable(old), comparable(new), differing(old, new)
    said = [f"{k} {before.get(k)} -> {after.get(k)}" for k in keys[:3]]
    return f" ({', '.join(said)}{', ...' if len(keys) > 3 else ''})" if said else ""
