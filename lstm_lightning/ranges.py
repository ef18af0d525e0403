"""Range rules as types: jsonargparse's restricted number types on ``__init__`` arguments.

An argument annotated ``PositiveInt``, ``NonNegativeInt``, ``PositiveFloat``,
``NonNegativeFloat`` or ``HalfOpenUnitInterval`` (a float in [0, 1)), alone, optional
(``T | None``) or in a tuple, is checked by the parser on every command-line path (fit,
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
}
BY_NAME = {t.__name__: t for t in RULES}


@functools.cache
def range_arguments(cls: type) -> dict[str, tuple[type, str]]:
    """``{argument: (range type, shape)}`` of ``cls.__init__``; shape is ``value``,
    ``optional`` (``T | None``) or ``tuple`` (every item a T)."""
    out = {}
    for name, hint in typing.get_type_hints(cls.__init__).items():
        args = typing.get_args(hint)
        if hint in RULES:
            out[name] = (hint, "value")
        elif typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2:
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1 and inner[0] in RULES:
                out[name] = (inner[0], "optional")
        elif typing.get_origin(hint) is tuple and args and all(a in RULES for a in args):
            out[name] = (args[0], "tuple")
    return out


def check(cls: type, section: str, values: dict) -> None:
    """Check ``values`` (``cls``'s ``__init__`` arguments) against their range types: a
    ``ConfigError`` line naming ``section.argument`` and the rule for the first outside."""
    for name, (rule_type, shape) in range_arguments(cls).items():
        value = values[name]
        if value is None and shape == "optional":
            continue
        try:
            for item in value if shape == "tuple" else [value]:
                rule_type(item)
        except (TypeError, ValueError):
            rule = RULES[rule_type][0] + (" or null" if shape == "optional" else "")
            verb = "lie" if shape == "tuple" else "be"
            raise ConfigError(f"{section}.{name} must {verb} {rule}, got {value}") from None


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
    optional = "Union subtypes" in text  # T | None: the value comes last
    if optional:
        rule += " or null"
        value = re.search(r"Given value: (.*)$", text)[1]
    elif found := re.match(r"(\S+) (?:does not conform|not an? )", after):
        value = found[1]
    else:  # e.g. invalid literal for int() with base 10: 'abc'
        value = re.sub(r"^.*: '(.*)'$", r"\1", after)
    if "does not conform to restriction" in after:
        return f"{key[1]} must be {rule}, got {value}"
    expected = rule if rule.startswith("a ") else f"{kind} {rule}"
    return f'Parser key "{key[1]}": Expected {expected}. Got value: {value}'
