"""Range rules as types: jsonargparse's restricted number types on ``__init__`` arguments.

An argument annotated ``PositiveInt``, ``NonNegativeInt``, ``PositiveFloat``,
``NonNegativeFloat``, ``OpenUnitInterval`` (a float in (0, 1)) or ``HalfOpenUnitInterval``
(a float in [0, 1)), alone, with alternatives (``T | None``, ``T | Literal["auto"]``) or
in a tuple, is checked by the parser on every command-line path (fit,
sweep, coord-check). ``check`` applies the same annotations to a class built in Python;
``explain`` words the parser's message for one of them as the one line ``check`` gives:
``model.learning_rate must be >= 0, got -1``.
"""

from __future__ import annotations

import functools
import re
import types
import typing

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from lstm_lightning.errors import ConfigError

HalfOpenUnitInterval = restricted_number_type(
    "HalfOpenUnitInterval", float, [(">=", 0.0), ("<", 1.0)], docstring="A float in [0, 1)."
)
HalfOpenUnitInterval.__module__ = __name__  # where pickle finds it

# type -> (the rule after "must be", what a value must be first)
RULES: dict[type, tuple[str, str]] = {
    PositiveInt: ("a positive integer", "an integer"),
    NonNegativeInt: (">= 0", "an integer"),
    PositiveFloat: ("> 0", "a number"),
    NonNegativeFloat: (">= 0", "a number"),
    HalfOpenUnitInterval: ("in [0, 1)", "a number"),
    OpenUnitInterval: ("in (0, 1)", "a number"),
}
BY_NAME = {t.__name__: t for t in RULES}


@functools.cache
def range_arguments(cls: type) -> dict[str, tuple[type, str | tuple]]:
    """``{argument: (range type, shape)}`` of ``cls.__init__``; shape is ``value``,
    ``tuple`` (every item a T), or the tuple of values also accepted as they are: ``(None,)``
    for ``T | None``, ``("auto",)`` for ``T | Literal["auto"]``."""
    out = {}
    for name, hint in typing.get_type_hints(cls.__init__).items():
        args = typing.get_args(hint)
        if hint in RULES:
            out[name] = (hint, "value")
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            inner = [a for a in args if a in RULES]
            others = [a for a in args if a not in RULES]
            if len(inner) == 1 and all(_alternatives(a) for a in others):
                out[name] = (inner[0], sum((_alternatives(a) for a in others), ()))
        elif typing.get_origin(hint) is tuple and args and all(a in RULES for a in args):
            out[name] = (args[0], "tuple")
    return out


def _alternatives(part) -> tuple:
    """The values a union part accepts as they are: (None,), a Literal's, or () if any."""
    if part is type(None):
        return (None,)
    return typing.get_args(part) if typing.get_origin(part) is typing.Literal else ()


def _or(alternatives) -> str:
    return "".join(f" or {'null' if a is None else a}" for a in alternatives)


def check(cls: type, section: str, values: dict) -> None:
    """Check ``values`` (``cls``'s ``__init__`` arguments) against their range types: a
    ``ConfigError`` line naming ``section.argument`` and the rule for the first outside."""
    for name, (rule_type, shape) in range_arguments(cls).items():
        value = values[name]
        alternatives = shape if isinstance(shape, tuple) else ()
        if any(value is a or (a is not None and value == a) for a in alternatives):
            continue
        try:
            for item in value if shape == "tuple" else [value]:
                rule_type(item)
        except (TypeError, ValueError):
            rule = RULES[rule_type][0] + _or(alternatives)
            verb = "lie" if shape == "tuple" else "be"
            raise ConfigError(f"{section}.{name} must {verb} {rule}, got {value}") from None


def _union_alternatives(subtypes: str) -> list:
    """The accepted-as-is values in the parser's list of a union's subtypes."""
    found = []
    for literal, none in re.findall(r"Literal\[([^\]]*)\]|(NoneType)", subtypes):
        found += [None] if none else [v.strip().strip("'\"") for v in literal.split(",")]
    return found


def explain(text: str) -> str:
    """The parser's one-lined message for a value that fails a range type, as the rule it
    broke (``model.eps must be > 0, got 0``) or as what was expected for a value that is
    not a number; any other text unchanged."""
    key = re.match(r'Parser key "([\w.]+)": ', text)
    of_type = re.search(r"Not of type (\w+): ", text)
    if not (key and of_type and of_type[1] in BY_NAME):
        return text
    rule, kind = RULES[BY_NAME[of_type[1]]]
    after = text[of_type.end() :]
    union = re.search(r"Union subtypes Subtypes: \[(.*?)\] Errors", text)
    if union:  # T | None, T | Literal[...]: the value comes last
        rule += _or(_union_alternatives(union[1]))
        value = re.search(r"Given value: (.*)$", text)[1]
    elif found := re.match(r"(\S+) (?:does not conform|not an? )", after):
        value = found[1]
    else:  # e.g. invalid literal for int() with base 10: 'abc'
        value = re.sub(r"^.*: '(.*)'$", r"\1", after)
    if "does not conform to restriction" in after:
        return f"{key[1]} must be {rule}, got {value}"
    expected = rule if rule.startswith("a ") else f"{kind} {rule}"
    return f'Parser key "{key[1]}": Expected {expected}. Got value: {value}'
