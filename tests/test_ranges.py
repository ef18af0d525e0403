"""Range rules as types: a bad data value reads the same from the parser and from Python."""

from __future__ import annotations

from typing import Literal

import pytest
from jsonargparse import ArgumentError, ArgumentParser

from lstm_lightning import ranges
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.ranges import OpenUnitInterval, PositiveInt

BAD = [  # argument, a value outside its range type, the one line
    ("seq_len", 0, "data.seq_len must be a positive integer, got 0"),
    ("batch_size", -3, "data.batch_size must be a positive integer, got -3"),
    ("num_workers", -1, "data.num_workers must be >= 0, got -1"),
    ("val_fraction", 1.0, "data.val_fraction must be in (0, 1), got 1.0"),
    ("test_fraction", 0.0, "data.test_fraction must be in (0, 1), got 0.0"),
    ("vocab_size", 0, "data.vocab_size must be a positive integer or null, got 0"),
    ("steps_per_batch", 0, "data.steps_per_batch must be a positive integer or auto, got 0"),
    ("synthetic_tokens", 0, "data.synthetic_tokens must be a positive integer, got 0"),
    ("synthetic_states", 0, "data.synthetic_states must be a positive integer, got 0"),
]


@pytest.mark.parametrize("key, value, line", BAD, ids=[b[0] for b in BAD])
def test_python_and_the_parser_refuse_alike(key, value, line):
    with pytest.raises(ConfigError) as err:
        SequenceDataModule(**{key: value})
    assert str(err.value) == line
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SequenceDataModule, "data")
    with pytest.raises(ArgumentError) as err:
        parser.parse_args([f"--data.{key}", str(value)])
    assert ranges.explain(" ".join(str(err.value).split())) == line


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"steps_per_batch": 4}, {"vocab_size": 7}, {"val_fraction": 0.5, "test_fraction": 0.25}],
)
def test_good_values_pass(kwargs):
    SequenceDataModule(**kwargs)


class Choices:
    def __init__(
        self,
        k: PositiveInt | Literal["auto", "max"] = "auto",
        f: OpenUnitInterval | Literal["off"] | None = None,
        n: int | Literal["x"] = 0,  # not a range type: left to the parser
    ):
        ranges.check(Choices, "c", locals())


@pytest.mark.parametrize(
    "kwargs, line",
    [
        ({"k": 0}, "c.k must be a positive integer or auto or max, got 0"),
        ({"k": True}, "c.k must be a positive integer or auto or max, got True"),
        ({"f": 1.5}, "c.f must be in (0, 1) or off or null, got 1.5"),
        ({"f": "on"}, "c.f must be in (0, 1) or off or null, got on"),
    ],
)
def test_a_range_type_with_alternatives(kwargs, line):
    for good in ({"k": "max"}, {"k": 3}, {"f": "off"}, {"f": 0.5}, {"n": -7}):
        Choices(**good)
    with pytest.raises(ConfigError) as err:
        Choices(**kwargs)
    assert str(err.value) == line


@pytest.mark.parametrize(
    "text",
    [
        "something else",
        'Parser key "m.x": Not of type SomeOtherType: 3 does not conform to restriction v>5',
        "Parser key \"data.batching\": Expected a typing.Literal['windows', 'contiguous']. "
        "Got value: rows",  # a plain choice: the parser's words are clear
    ],
)
def test_other_parser_messages_are_kept(text):
    assert ranges.explain(text) == text
