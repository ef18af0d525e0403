"""Range rules as types: one check of an argument's annotation, the same on every path.

A hyperparameter's range is its annotation, a jsonargparse restricted type such as
``PositiveInt`` or ``OpenUnitInterval`` (or a ``Literal`` of choices), alone or in a
union (``PositiveInt | Literal["auto"]``, ``PositiveInt | None``). The parser checks it
on every command line and config file (fit, sweep, coord-check); ``check_arguments``
applies the same annotation to an object built directly in Python, and
``restriction_words`` puts the parser's refusal in the same words, so that a bad value
reads the same wherever it comes from: ``data.seq_len must be at least 1, got 0``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from lstm_lightning.errors import ConfigError

# Words for jsonargparse's restricted number types (``jsonargparse.typing``), by name.
RANGE_WORDS = {
    "PositiveInt": "at least 1",
    "NonNegativeInt": "at least 0",
    "PositiveFloat": "above 0",
    "NonNegativeFloat": "at least 0",
    "OpenUnitInterval": "between 0 and 1 (both excluded)",
    "ClosedUnitInterval": "between 0 and 1 (both included)",
}
WHOLE = ("PositiveInt", "NonNegativeInt")  # the integer types among them


def check_arguments(fn: Callable, values: dict[str, Any], section: str) -> None:
    """Raise ``ConfigError`` for the first value its argument's annotation rules out.

    ``fn`` is an ``__init__`` (or any annotated function); ``values`` may hold more names
    than it takes (pass ``locals()``). An annotation with a part that is neither a
    restricted type, a ``Literal`` nor ``None`` (``int | None``, ``str``) is not checked.
    """
    for name, hint in typing.get_type_hints(fn).items():
        if name not in values:
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        if not all(_checkable(t) for t in options) or options == (type(None),):
            continue
        value = values[name]
        if not any(_fits(t, value) for t in options):
            words = " or ".join(_words(t) for t in options)
            whole = any(getattr(t, "__name__", "") in WHOLE for t in options)
            raise ConfigError(_must(f"{section}.{name}", words, repr(value), whole))


def _checkable(kind: Any) -> bool:
    return hasattr(kind, "_expression") or typing.get_origin(kind) is Literal or kind is type(None)


def _fits(kind: Any, value: Any) -> bool:
    if kind is type(None) or typing.get_origin(kind) is Literal:
        return value in (typing.get_args(kind) or (None,))
    base = (int, float) if kind._type is float else (int,)
    if isinstance(value, bool) or not isinstance(value, base):
        return False
    try:
        kind(value)  # a restricted type refuses a value outside its range
    except ValueError:
        return False
    return True


def _words(kind: Any) -> str:
    if kind is type(None):
        return "null"
    if typing.get_origin(kind) is Literal:
        return _choices([str(v) for v in typing.get_args(kind)])
    return RANGE_WORDS.get(kind.__name__) or f"{kind._type.__name__} {kind._expression}"


def _choices(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else f"one of {', '.join(choices)}"


def _must(key: str, words: str, shown: str, whole: bool) -> str:
    """'<key> must be <words>, got <value>', asking for a whole number by name where the
    type is an integer and the value is not one."""
    fraction = whole and not re.fullmatch(r"-?\d+", shown)
    return f"{key} must be {'a whole number, ' if fraction else ''}{words}, got {shown}"


# jsonargparse's refusals of a restricted type and of a union holding one, as folded onto
# one line by ``fit.one_line`` (checked against jsonargparse 4.53). A plain choice's
# refusal ("Expected a typing.Literal[...]. Got value: ...") is clear as it stands.
_REFUSALS = (
    re.compile(r'Parser key "(?P<key>[\w.]+)": Not of type (?P<types>\w+): (?P<why>.*)$'),
    re.compile(
        r'Parser key "(?P<key>[\w.]+)": Does not validate against any of the Union subtypes '
        r"Subtypes: \[(?P<types>.*?)\] Errors: .* Given value: (?P<value>.*)$"
    ),
)
_VALUE = re.compile(r"^(?P<value>\S+) (?:does not conform|not an? )|with base 10: '(?P<quoted>.*)'")
_PART = re.compile(r"jsonargparse\.typing\.(\w+)'>|(NoneType)|Literal\[([^\]]*)\]")


def restriction_words(text: str) -> str:
    """The parser's one-line refusal of a restricted type (alone or in a union) in the
    words of ``check_arguments``; any other text unchanged.

    >>> restriction_words('Parser key "data.seq_len": Not of type PositiveInt: 0 does '
    ...                   'not conform to restriction v>0')
    'data.seq_len must be at least 1, got 0'
    """
    for pattern in _REFUSALS:
        match = pattern.search(text)
        if match:
            return _reworded(match, pattern is _REFUSALS[0]) or text
    return text


def _reworded(match: re.Match, single: bool) -> str | None:
    value = match.groupdict().get("value")
    if single:
        found = _VALUE.search(match["why"])
        value = found and (found["value"] or found["quoted"])
        parts = [RANGE_WORDS.get(match["types"])]
    else:
        parts = [_part_words(*part) for part in _PART.findall(match["types"])]
    if value is None or not parts or None in parts:
        return None  # not a shape we know: keep the parser's words
    whole = any(name in match["types"] for name in WHOLE)
    return _must(match["key"], " or ".join(parts), value, whole)


def _part_words(restricted: str, none: str, literal: str) -> str | None:
    if none:
        return "null"
    if literal:
        return _choices([c.strip().strip("'\"") for c in literal.split(",")])
    return RANGE_WORDS.get(restricted)
