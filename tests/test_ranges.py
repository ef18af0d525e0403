"""Range rules as types: a bad value reads the same from the parser and from Python."""

from __future__ import annotations

import doctest
from typing import Literal

import pytest
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import NonNegativeFloat, OpenUnitInterval, PositiveInt

import lstm_lightning.ranges
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.ranges import check_arguments, restriction_words

BAD = [
    ("seq_len", 0, "data.seq_len must be at least 1, got 0"),
    ("batch_size", -3, "data.batch_size must be at least 1, got -3"),
    ("num_workers", -1, "data.num_workers must be at least 0, got -1"),
    ("val_fraction", 1.0, "data.val_fraction must be between 0 and 1 (both excluded), got 1.0"),
    ("test_fraction", 0.0, "data.test_fraction must be between 0 and 1 (both excluded), got 0.0"),
    ("vocab_size", 0, "data.vocab_size must be at least 1 or null, got 0"),
    ("steps_per_batch", 0, "data.steps_per_batch must be at least 1 or auto, got 0"),
    ("synthetic_tokens", 0, "data.synthetic_tokens must be at least 1, got 0"),
    ("synthetic_states", 0, "data.synthetic_states must be at least 1, got 0"),
    ("seq_len", 2.5, "data.seq_len must be a whole number, at least 1, got 2.5"),
]


@pytest.mark.parametrize("key, value, line", BAD)
def test_python_and_the_parser_refuse_alike(key, value, line):
    with pytest.raises(ConfigError) as err:
        SequenceDataModule(**{key: value})
    assert str(err.value) == line
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SequenceDataModule, "data")
    with pytest.raises(ArgumentError) as err:
        parser.parse_args([f"--data.{key}", str(value)])
    assert restriction_words(" ".join(str(err.value).split())) == line


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"steps_per_batch": 4}, {"vocab_size": 7}, {"val_fraction": 0.5, "test_fraction": 0.25}],
)
def test_good_values_pass(kwargs):
    SequenceDataModule(**kwargs)


def test_choices_are_checked_and_worded():
    with pytest.raises(ConfigError) as err:
        SequenceDataModule(batching="rows")
    assert str(err.value) == "data.batching must be one of windows, contiguous, got 'rows'"


def demo(
    a: PositiveInt,
    b: NonNegativeFloat | None,
    c: int | None,
    d: OpenUnitInterval | Literal["x"],
    e: str,
):
    """Annotated like an ``__init__``."""


@pytest.mark.parametrize(
    "values, line",
    [
        ({"a": True}, "s.a must be a whole number, at least 1, got True"),  # not a count
        ({"a": "3"}, "s.a must be a whole number, at least 1, got '3'"),
        ({"b": -0.5}, "s.b must be at least 0 or null, got -0.5"),
        ({"d": "y"}, "s.d must be between 0 and 1 (both excluded) or x, got 'y'"),
    ],
)
def test_check_arguments_words(values, line):
    with pytest.raises(ConfigError) as err:
        check_arguments(demo, values, "s")
    assert str(err.value) == line


def test_unchecked_annotations_and_other_names_are_left_alone():
    check_arguments(demo, {"a": 1, "b": None, "c": -5, "d": "x", "e": -1, "self": 0}, "s")


@pytest.mark.parametrize(
    "text",
    [
        "something else",
        'Parser key "m.x": Not of type SomeOtherType: 3 does not conform to restriction v>5',
        "Parser key \"data.path\": Expected a <class 'str'>. Got value: 3",
        "Parser key \"data.batching\": Expected a typing.Literal['windows', 'contiguous']. "
        "Got value: rows",  # a plain choice: the parser's words are clear
    ],
)
def test_other_parser_messages_are_kept(text):
    assert restriction_words(text) == text


def test_doctests_pass():
    assert doctest.testmod(lstm_lightning.ranges).failed == 0
