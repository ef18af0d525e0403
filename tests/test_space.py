"""Search spaces (lstm_lightning.space): parsing, one-line errors, optuna distributions."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonargparse.typing import OpenUnitInterval, PositiveInt
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler

from lstm_lightning import space as space_module
from lstm_lightning.errors import ConfigError
from lstm_lightning.space import Choice, FloatRange, IntRange, Space

SHIPPED = Path(__file__).resolve().parent.parent / "configs" / "space_lstm.yaml"
LR = {"low": 1e-4, "high": 0.3, "log": True}

BAD_SPACES = [
    ({"learnin_rate": LR}, "unknown key 'learnin_rate' (did you mean learning_rate"),
    ({"model.hiden_size": LR}, "(did you mean model.hidden_size"),
    ({3: LR}, "unknown key 3; use a flat key"),
    ({"learning_rate": LR, "model.learning_rate": LR}, "both set model.learning_rate; keep one"),
    ({"learning_rate": 0.1}, "learning_rate: give a distribution, {low, high, log}"),
    ({"learning_rate": {"lo": 1e-4, "high": 0.3}}, "unknown field 'lo' (did you mean low"),
    ({"learning_rate": {"low": 1e-4}}, "learning_rate: missing high; a range needs both"),
    ({"learning_rate": {"log": True}}, "missing low and high"),
    ({"learning_rate": {"low": 0.3, "high": 0.1}}, "low 0.3 must be below high 0.1; swap them"),
    ({"init_std": {"low": 1.0, "high": 1.0}}, "set the value in the base config instead"),
    ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "log: true needs low > 0"),
    ({"learning_rate": {"low": "a", "high": 0.1}}, "low must be a finite number, got 'a'"),
    ({"learning_rate": {"low": 0.1, "high": float("inf")}}, "high must be a finite number"),
    ({"learning_rate": {"low": "1e-4", "high": 0.1}}, "(YAML reads 1e-4 as text: write 0.0001)"),
    ({"init_std": {"choices": ["1e-1"]}}, "not '1e-1' (YAML reads 1e-1 as text: write 0.1)"),
    ({"learning_rate": {"low": 0.1, "high": 1.0, "log": "yes"}}, "log must be true or false"),
    ({"learning_rate": {"low": 0.1, "high": 1.0, "step": 0.1}}, "step is for integer ranges"),
    ({"warmup_steps": {"low": 0, "high": 10, "step": 0}}, "step must be a positive integer"),
    ({"warmup_steps": {"low": 0, "high": 10, "step": 2.5}}, "step must be a positive integer"),
    ({"warmup_steps": {"low": 0, "high": 10, "step": 3}}, "quietly lower high to 9); set high"),
    ({"warmup_steps": {"low": 1, "high": 9, "step": 2, "log": True}}, "log: true needs step 1"),
    ({"warmup_steps": {"low": 0.5, "high": 10}}, "model.warmup_steps takes integers"),
    ({"schedule": {"low": 0, "high": 1}}, "'linear'; use {choices: [...]}"),
    ({"betas": {"choices": [0.9]}}, "model.betas is not a scalar a sampler can draw"),
    ({"optimizer": {"choices": []}}, "choices must be a non-empty list, got []"),
    ({"optimizer": {"choices": "adam"}}, "choices must be a non-empty list"),
    ({"init_std": {"choices": [1, 1.0]}}, "choice 1.0 is given twice; list each once"),
    ({"init_std": {"choices": [[1, 2]]}}, "choice [1, 2] is not a scalar"),
    ({"optimizer": {"choices": ["adam", "lion"]}}, "takes 'adam' or 'adamw' or 'sgd', not 'lion'"),
    ({"readout_zero_init": {"choices": [True, 1]}}, "takes true/false, not 1; remove it"),
    ({"warmup_steps": {"choices": [1, 2.5]}}, "takes integers, not 2.5"),
    ({"optimizer": {"choices": ["adam"], "low": 1}}, "choices takes no other field, got low"),
    ({}, "space: a search space maps override keys to distributions"),
    ([("learning_rate", LR)], "a search space maps override keys"),
]

TRANSFER_REFUSED = [
    ("dropout", {"low": 0.0, "high": 0.5}, "dropout is regularization, which does not transfer"),
    ("weight_decay", {"low": 0.0, "high": 0.1}, "weight_decay is regularization"),
    ("model.weight_decay", {"low": 0.0, "high": 0.1}, "model.weight_decay is regularization"),
    ("hidden_size", {"low": 16, "high": 64}, "hidden_size sets the proxy's shape"),
    ("base_hidden_size", {"low": 16, "high": 64}, "base_hidden_size sets the proxy's shape"),
    ("embedding_size", {"choices": [16, 32]}, "embedding_size sets the proxy's shape"),
    ("num_layers", {"low": 1, "high": 3}, "num_layers sets the proxy's shape"),
    ("parametrization", {"choices": ["sp", "mup"]}, "parametrization decides whether anything"),
]

BAD_FILES = [
    ("", "is empty"),
    ("# nothing but a comment\n", "is empty"),
    ("learning_rate: {low: 1\n", "not valid YAML at line 2"),
    ("- learning_rate\n", "got a YAML list; write 'key: {low: ..., high: ...}' lines"),
    ("learning_rate: {low: 1}\nlearning_rate: {low: 2}\n", "key 'learning_rate' is given twice"),
    ("learning_rate: {lo: 1.0e-4, high: 0.3}\n", "learning_rate: unknown field 'lo'"),
]


def one_line_error(call, fragment: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    message = str(err.value)
    assert fragment in message and message.startswith(f"{where}: ") and "\n" not in message


@pytest.mark.parametrize("mapping, fragment", BAD_SPACES)
def test_a_bad_space_is_one_line_naming_the_key(mapping, fragment):
    one_line_error(lambda: Space.from_dict(mapping), fragment, "space")


@pytest.mark.parametrize("key, spec, fragment", TRANSFER_REFUSED)
def test_transfer_refuses_regularization_and_width(key, spec, fragment):
    Space.from_dict({key: spec})  # a plain search may tune it
    one_line_error(lambda: Space.from_dict({key: spec}, transfer=True), fragment, "space")


@pytest.mark.parametrize("text, fragment", BAD_FILES)
def test_a_bad_space_file_is_one_line_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    one_line_error(lambda: Space.from_file(path), fragment, str(path))


def test_a_missing_or_unreadable_space_file(tmp_path):
    missing = tmp_path / "no.yaml"
    one_line_error(lambda: Space.from_file(missing), "no such space file", str(missing))
    one_line_error(lambda: Space.from_file(tmp_path), "cannot read the space file", str(tmp_path))


def test_a_restricted_key_refuses_bounds_and_choices_outside_its_rule(monkeypatch):
    monkeypatch.setitem(space_module.HINTS["data"], "seq_len", PositiveInt | None)
    monkeypatch.setitem(space_module.HINTS["model"], "dropout", OpenUnitInterval)
    Space.from_dict({"seq_len": {"low": 1, "high": 8}, "dropout": {"choices": [0.1, 0.5]}})
    bad = [
        ({"seq_len": {"low": 0, "high": 8}}, "seq_len: data.seq_len cannot take 0 ("),
        ({"seq_len": {"choices": [None, -1]}}, "cannot take -1 (-1 does not conform"),
        ({"dropout": {"low": 0, "high": 0.5}}, "model.dropout cannot take 0.0 ("),
    ]
    for mapping, fragment in bad:
        one_line_error(lambda m=mapping: Space.from_dict(m), fragment, "space")


def test_a_valid_space_round_trips_to_optuna():
    space = Space.from_dict(
        {
            "learning_rate": LR,
            "model.init_std": {"low": 1, "high": 4},  # a float key: whole bounds stay floats
            "warmup_steps": {"low": 0, "high": 100, "step": 10},
            "seq_len": {"low": 8, "high": 64, "log": True},
            "gradient_clip_val": {"low": 1, "high": 3},  # untyped: whole bounds are integers
            "optimizer": {"choices": ["adam", "sgd"]},
            "embedding_size": {"choices": [None, 16]},
        }
    )
    assert list(space) == list(space.to_optuna()) and len(space) == 7
    assert space.paths["learning_rate"] == "model.learning_rate"
    assert space.paths["gradient_clip_val"] == "trainer.gradient_clip_val"
    assert space["model.init_std"] == FloatRange(1.0, 4.0, False)
    assert space["warmup_steps"] == IntRange(0, 100, 10, False)
    assert space["optimizer"] == Choice(("adam", "sgd"))
    dists = space.to_optuna()
    assert dists["learning_rate"] == FloatDistribution(1e-4, 0.3, log=True)
    assert isinstance(dists["model.init_std"].low, float) and not dists["model.init_std"].log
    assert dists["warmup_steps"] == IntDistribution(0, 100, step=10)
    assert dists["seq_len"] == IntDistribution(8, 64, log=True)
    assert dists["gradient_clip_val"] == IntDistribution(1, 3)
    assert dists["optimizer"] == CategoricalDistribution(("adam", "sgd"))
    assert dists["embedding_size"] == CategoricalDistribution((None, 16))


@pytest.mark.parametrize("path", [SHIPPED, SHIPPED.parent / "study" / "space.yaml"])
def test_the_shipped_spaces_transfer(path):
    space = Space.from_file(path, transfer=True)
    issue_example = {"learning_rate", "init_std", "output_mult", "embedding_mult"}
    assert issue_example <= set(space) and space["readout_zero_init"] == Choice((True, False))
    assert all(space[k].log for k in issue_example)


def test_the_study_space_is_frozen():
    """Every study of the μTransfer study compares its space by content: an edit to
    configs/study/space.yaml would make each refuse to resume."""
    frozen = yaml.safe_load((SHIPPED.parent / "study" / "space.yaml").read_text())
    wide = {"low": 0.125, "high": 8.0, "log": True}
    assert frozen == {
        "learning_rate": {"low": 1.0e-4, "high": 0.3, "log": True},
        "init_std": {"low": 0.25, "high": 4.0, "log": True},
        "output_mult": wide,
        "embedding_mult": wide,
        "readout_zero_init": {"choices": [True, False]},
        "warmup_steps": {"low": 0, "high": 200, "step": 10},
        "input_lr_mult": wide,
        "hidden_lr_mult": wide,
        "output_lr_mult": wide,
    }


def test_the_default_space_contains_the_study_space():
    """The default widens the μTransfer study's frozen space, never narrows it: each of the
    study's optima stays inside."""
    default = Space.from_file(SHIPPED, transfer=True)
    study = Space.from_file(SHIPPED.parent / "study" / "space.yaml", transfer=True)
    assert set(default) == set(study)
    for key, dist in study.items():
        if hasattr(dist, "low"):
            assert default[key].low <= dist.low and default[key].high >= dist.high, key
    assert default["embedding_mult"].low < 0.125 and default["output_mult"].high > 8


FLOAT_KEYS = ("learning_rate", "init_std", "output_mult", "embedding_mult", "model.eps")
SIGNED_KEYS = ("output_mult", "embedding_mult")  # the others' types take no value <= 0
INT_KEYS = ("warmup_steps", "seq_len", "batch_size", "max_steps")
CHOICE_KEYS = {
    "readout_zero_init": st.booleans(),
    "schedule": st.sampled_from(["constant", "cosine", "linear"]),
    "forget_bias": st.floats(-10, 10, allow_nan=False),
}


@st.composite
def spaces(draw) -> dict:
    space = {}
    for key in draw(st.lists(st.sampled_from(FLOAT_KEYS), unique=True, min_size=1, max_size=3)):
        log = draw(st.booleans())
        low = draw(st.floats(-1e3 if key in SIGNED_KEYS and not log else 1e-6, 1e3))
        space[key] = {"low": low, "high": low + draw(st.floats(1e-3, 1e3)), "log": log}
    for key in draw(st.lists(st.sampled_from(INT_KEYS), unique=True, max_size=2)):
        low, step = draw(st.integers(1, 100)), draw(st.integers(1, 5))
        space[key] = {"low": low, "high": low + step * draw(st.integers(1, 20)), "step": step}
    for key in draw(st.lists(st.sampled_from(sorted(CHOICE_KEYS)), unique=True, max_size=2)):
        space[key] = {"choices": draw(st.lists(CHOICE_KEYS[key], min_size=1, unique=True))}
    return space


@settings(derandomize=True, max_examples=40, deadline=None)
@given(spaces())
def test_a_sampler_draws_inside_any_valid_space(mapping):
    space = Space.from_dict(mapping, transfer=True)
    assert list(space) == list(mapping)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    for _ in range(3):
        params = study.ask(space.to_optuna()).params
        for key, spec in mapping.items():
            value = params[key]
            if "choices" in spec:
                assert any(value == c and type(value) is type(c) for c in spec["choices"])
            else:
                assert spec["low"] <= value <= spec["high"]
                if "step" in spec:
                    assert isinstance(value, int) and (value - spec["low"]) % spec["step"] == 0
