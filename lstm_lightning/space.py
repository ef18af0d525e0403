"""Search spaces as data: override keys mapped to the distributions a search draws from.

A space is a YAML file (or a dict) whose keys are the sweep's override keys (aliases such
as ``learning_rate`` or their dotted paths such as ``model.init_std``) and whose values are
``{low, high, log}`` (floats; log optional), ``{low, high, step}`` (integers; step optional,
log allowed with step 1) or ``{choices: [...]}`` (null, booleans, numbers, strings). A range
is an integer range when its key takes integers (from the model's and data's annotations,
whose restricted types such as PositiveInt are checked on the bounds), or, for an
untyped key, when both bounds are integers.

Every mistake is one ``ConfigError`` line naming the file, the key and the fix. With
``transfer=True`` (μTransfer: tune a narrow proxy, copy to the wide model) a space refuses
what does not transfer across width ("Tensor Programs V", Yang et al. 2022): regularization,
the proxy's shape and its parametrization, all of which its base config sets.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.module import LanguageModel
from lstm_lightning.runs import ALIASES

# What a transfer space refuses, and why (TP5: regularization does not transfer).
REGULARIZATION = ("model.dropout", "model.weight_decay")
WIDTH = ("model.hidden_size", "model.base_hidden_size", "model.embedding_size", "model.num_layers")
NO_TRANSFER = {
    **dict.fromkeys(REGULARIZATION, "is regularization, which does not transfer across width"),
    **dict.fromkeys(WIDTH, "sets the proxy's shape, which its base config fixes"),
    "model.parametrization": "decides whether anything transfers; μTransfer needs mup",
}
SCALARS = (type(None), bool, int, float, str)
FORMS = "{low, high, log} for floats, {low, high, step} for integers or {choices: [...]}"
HINTS = {
    "model": typing.get_type_hints(LanguageModel.__init__),
    "data": typing.get_type_hints(SequenceDataModule.__init__),
}


@dataclass(frozen=True)
class FloatRange:
    """Floats in [low, high], uniform or (log) log-uniform."""

    low: float
    high: float
    log: bool = False

    def to_optuna(self) -> FloatDistribution:
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class IntRange:
    """Integers low, low + step, ..., high (step divides high - low), or log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def to_optuna(self) -> IntDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Choice:
    """One of ``choices``, each a scalar, none twice."""

    choices: tuple

    def to_optuna(self) -> CategoricalDistribution:
        return CategoricalDistribution(self.choices)


Distribution = FloatRange | IntRange | Choice


class Space(Mapping):
    """An ordered, read-only mapping of override key -> distribution, in the file's order.

    ``paths`` gives each key's dotted config path. A trial's params, keyed like the space,
    are sweep overrides as they stand.
    """

    def __init__(self, dists: dict[str, Distribution], paths: dict[str, str]):
        self._dists, self.paths = dict(dists), dict(paths)

    def __getitem__(self, key: str) -> Distribution:
        return self._dists[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dists)

    def __len__(self) -> int:
        return len(self._dists)

    def __repr__(self) -> str:
        return f"Space({self._dists!r})"

    def to_optuna(self) -> dict[str, BaseDistribution]:
        """Optuna's distributions by key, for ``study.ask`` or ``trial.suggest``."""
        return {key: dist.to_optuna() for key, dist in self._dists.items()}

    @classmethod
    def from_dict(cls, mapping: Any, transfer: bool = False, where: str = "space") -> Space:
        """The checked space; ``where`` (a file name) starts every error line."""
        if not isinstance(mapping, Mapping) or not mapping:
            raise ConfigError(
                f"{where}: a search space maps override keys to distributions ({FORMS}), "
                f"got {mapping!r}"
            )
        dists, paths = {}, {}
        for key, spec in mapping.items():
            path = _resolve(key, where)
            twin = next((k for k, p in paths.items() if p == path), None)
            if twin is not None:
                raise ConfigError(f"{where}: {key} and {twin} both set {path}; keep one")
            if transfer and path in NO_TRANSFER:
                raise ConfigError(
                    f"{where}: {key} {NO_TRANSFER[path]} (Tensor Programs V); set it in the "
                    "base config, not in a transfer space"
                )
            dists[key], paths[key] = _distribution(spec, path, f"{where}: {key}"), path
        return cls(dists, paths)

    @classmethod
    def from_file(cls, path: str | Path, transfer: bool = False) -> Space:
        """The checked space in YAML file ``path``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such space file; see configs/space_lstm.yaml") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the space file: {err}") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or err
            raise ConfigError(f"{path}: not valid YAML{at}: {problem}; fix the file") from None
        if data is None:
            raise ConfigError(f"{path}: the space file is empty; give one key a line: {FORMS}")
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: a space file maps keys to distributions, got a YAML "
                f"{type(data).__name__}; write 'key: {{low: ..., high: ...}}' lines"
            )
        return cls.from_dict(data, transfer, str(path))


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep)


def _resolve(key: Any, where: str) -> str:
    """The dotted path of an alias, or the key itself when it is one of their paths."""
    if key in ALIASES:
        return ALIASES[key]
    if key in ALIASES.values():
        return key
    hint = did_you_mean(str(key), [*ALIASES, *ALIASES.values()])
    raise ConfigError(
        f"{where}: unknown key {key!r}{hint}; use a flat key such as learning_rate or a "
        "full path such as model.init_std"
    )


@dataclass(frozen=True)
class _Takes:
    """What a typed model or data key takes: scalar types, literal values, and the rules of
    restricted number types (jsonargparse's PositiveInt, OpenUnitInterval, ...)."""

    types: frozenset
    values: tuple
    rules: tuple

    def describe(self) -> str:
        names = {type(None): "null", bool: "true/false", int: "integers", float: "floats"}
        names.update({str: "strings", object: "other values"})
        words = [repr(v) for v in sorted(self.values, key=str)]
        return " or ".join(words + sorted(names[k] for k in self.types))

    def refuses(self, value: Any) -> str | None:
        """Why the key cannot take ``value``, or None when it can."""
        if any(value == v and type(value) is type(v) for v in self.values):
            return None
        kind = bool if isinstance(value, bool) else type(value)
        if kind not in self.types and not (kind is int and float in self.types):
            return f"takes {self.describe()}, not {value!r}"
        errors = []
        for rule in self.rules if kind in (int, float) else ():
            try:
                rule(value)
                return None
            except ValueError as err:
                errors.append(str(err))
        return f"cannot take {value!r} ({errors[0]})" if errors else None


def _takes(path: str) -> _Takes | None:
    """What ``path`` takes, from its annotation, or None when it has none here."""
    section, _, name = path.partition(".")
    hint = HINTS.get(section, {}).get(name)
    if hint is None:
        return None
    kinds, values, rules, todo = set(), [], [], [hint]
    while todo:
        t = todo.pop()
        origin = typing.get_origin(t)
        if origin is Literal:
            values.extend(typing.get_args(t))
        elif origin in (typing.Union, types.UnionType):
            todo.extend(typing.get_args(t))
        elif origin is typing.Annotated:
            todo.append(typing.get_args(t)[0])
        elif isinstance(t, type) and issubclass(t, SCALARS):
            base = bool if t is bool else next(s for s in SCALARS[::-1] if issubclass(t, s))
            kinds.add(base)
            rules += [t] if t is not base else []  # PositiveInt: an int with a rule
        else:
            kinds.add(object)  # a tuple or a class: not a scalar a sampler can draw
    return _Takes(frozenset(kinds), tuple(values), tuple(rules))


def _distribution(spec: Any, path: str, where: str) -> Distribution:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: give a distribution, {FORMS}; got {spec!r}")
    takes = _takes(path)
    if takes is not None and not takes.values and takes.types <= {object, type(None)}:
        raise ConfigError(f"{where}: {path} is not a scalar a sampler can draw; set it in --config")
    if "choices" in spec:
        others = sorted(map(str, set(spec) - {"choices"}))
        if others:
            raise ConfigError(
                f"{where}: choices takes no other field, got {', '.join(others)}; give either "
                "{choices: [...]} or a range {low, high, ...}"
            )
        return _choice(spec["choices"], takes, path, where)
    unknown = sorted(map(str, set(spec) - {"low", "high", "log", "step"}))
    if unknown:
        hint = did_you_mean(unknown[0], ["low", "high", "log", "step", "choices"])
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}{hint}; give {FORMS}")
    return _range(spec, takes, path, where)


def _range(spec: Mapping, takes: _Takes | None, path: str, where: str) -> Distribution:
    missing = [f for f in ("low", "high") if f not in spec]
    if missing:
        raise ConfigError(f"{where}: missing {' and '.join(missing)}; a range needs both")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{where}: {name} must be a finite number, got {v!r}{_text(v)}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if takes is not None and not takes.types & {int, float}:
        raise ConfigError(f"{where}: {path} takes {takes.describe()}; use {{choices: [...]}}")
    whole = isinstance(low, int) and isinstance(high, int)
    integer = int in takes.types and float not in takes.types if takes else whole
    if integer and not whole:
        raise ConfigError(
            f"{where}: {path} takes integers; give integer bounds, not {low!r}, {high!r}"
        )
    if low >= high:
        fix = "set the value in the base config instead" if low == high else "swap them"
        raise ConfigError(f"{where}: low {low} must be below high {high}; {fix}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low}; raise low or drop log")
    for bound in (low, high) if takes else ():
        why = takes.refuses(bound if integer else float(bound))
        if why:
            raise ConfigError(f"{where}: {path} {why}; narrow the range")
    if integer:
        return IntRange(low, high, _step(spec.get("step", 1), low, high, log, where), log)
    if "step" in spec:
        fix = f"{path} takes floats" if takes else "give integer low and high for integers"
        raise ConfigError(f"{where}: step is for integer ranges; drop step ({fix})")
    return FloatRange(float(low), float(high), log)


def _step(step: Any, low: int, high: int, log: bool, where: str) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
        raise ConfigError(f"{where}: step must be a positive integer, got {step!r}")
    if log and step != 1:
        raise ConfigError(
            f"{where}: log: true needs step 1 (optuna draws a log-scale integer in unit "
            "steps); drop step or log"
        )
    if (high - low) % step:
        top = low + (high - low) // step * step
        raise ConfigError(
            f"{where}: step {step} does not divide high - low = {high - low} (optuna would "
            f"quietly lower high to {top}); set high to {top} or {top + step}, or change step"
        )
    return step


def _choice(choices: Any, takes: _Takes | None, path: str, where: str) -> Choice:
    if not isinstance(choices, list | tuple) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
    seen = []
    for c in choices:
        if not isinstance(c, SCALARS):
            raise ConfigError(
                f"{where}: choice {c!r} is not a scalar; optuna's choices are null, "
                "booleans, numbers and strings"
            )
        if (isinstance(c, bool), c) in seen:  # 1 and 1.0 are one choice, True and 1 two
            raise ConfigError(f"{where}: choice {c!r} is given twice; list each once")
        why = takes.refuses(c) if takes else None
        if why:
            raise ConfigError(f"{where}: {path} {why}{_text(c)}; remove it")
        seen.append((isinstance(c, bool), c))
    return Choice(tuple(choices))


def _text(value: Any) -> str:
    """A hint for a number PyYAML read as text: it takes ``1e-4`` (no dot) for a string."""
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        return ""
    return f" (YAML reads {value} as text: write {number!r})" if math.isfinite(number) else ""
