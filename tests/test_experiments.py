"""Experiment definitions: exact expansions, teaching errors, and the shipped groups."""

from __future__ import annotations

import copy
import doctest
import itertools
import math
import re
from collections import Counter

import pytest

import lstm_lightning.derive
import lstm_lightning.experiments as ex
import lstm_lightning.groups
from lstm_lightning.errors import ConfigError
from lstm_lightning.experiments import (
    EXPERIMENTS,
    GROUPS,
    check_structure,
    check_unique_labels,
    create_multi_lr_experiments,
    create_multi_seed_experiments,
    generate_lr_sweep_experiment,
    load_definitions,
    named_groups,
    select,
    subset_experiments,
)


def sub(label, **overrides):
    return {"label": label, "overrides": overrides}


def group(name, *subs):
    return {"name": name, "subexperiments": list(subs)}


@pytest.fixture
def base():
    """Two widths of SGD muP, with a nested override to catch shallow copies."""
    return group(
        "BASE",
        sub("lstm_16d_sgd_mup", hidden_size=16, optimizer="sgd", betas=[0.9, 0.99]),
        sub("lstm_32d_sgd_mup", hidden_size=32, optimizer="sgd", betas=[0.9, 0.99]),
    )


def labels(g):
    return [s["label"] for s in g["subexperiments"]]


# --- expansions ----------------------------------------------------------------------


def test_lr_sweep_exact(base):
    out = generate_lr_sweep_experiment(base, [0.25, 2.0**-3])
    assert out["name"] == "BASE_lr_sweep"
    assert labels(out) == [
        "lstm_16d_sgd_mup_lr0.25",
        "lstm_16d_sgd_mup_lr0.125",
        "lstm_32d_sgd_mup_lr0.25",
        "lstm_32d_sgd_mup_lr0.125",
    ]
    assert out["subexperiments"][1]["overrides"] == {
        "hidden_size": 16,
        "optimizer": "sgd",
        "betas": [0.9, 0.99],
        "learning_rate": 0.125,
    }


def test_lr_sweep_name_and_replaces_existing_rate():
    g = group("G", sub("a", learning_rate=1.0))
    out = generate_lr_sweep_experiment(g, [1e-5], name="MINE")
    assert out == group("MINE", sub("a_lr1e-05", learning_rate=1e-5))


def test_multi_lr_exact(base):
    out = create_multi_lr_experiments(base, [0.5, 0.25])
    assert [(g["name"], labels(g)) for g in out] == [
        ("BASE_lr0.5", ["lstm_16d_sgd_mup_lr0.5", "lstm_32d_sgd_mup_lr0.5"]),
        ("BASE_lr0.25", ["lstm_16d_sgd_mup_lr0.25", "lstm_32d_sgd_mup_lr0.25"]),
    ]
    assert out[1]["subexperiments"][0]["overrides"]["learning_rate"] == 0.25
    check_unique_labels(out)


def test_multi_lr_holds_the_same_runs_as_the_sweep(base):
    """One group per rate vs one group for the sweep: the same runs, split differently."""
    lrs = [0.5, 0.25, 0.125]
    split = create_multi_lr_experiments(base, lrs)
    whole = generate_lr_sweep_experiment(base, lrs)

    def runs(subs):
        return sorted((s["label"], sorted(s["overrides"].items())) for s in subs)

    assert runs(s for g in split for s in g["subexperiments"]) == runs(whole["subexperiments"])


def test_multi_seed_exact(base):
    out = create_multi_seed_experiments(base, seeds=(0, 1, 2))
    assert out["name"] == "BASE"
    assert labels(out) == [
        "lstm_16d_sgd_mup_s0",
        "lstm_16d_sgd_mup_s1",
        "lstm_16d_sgd_mup_s2",
        "lstm_32d_sgd_mup_s0",
        "lstm_32d_sgd_mup_s1",
        "lstm_32d_sgd_mup_s2",
    ]
    assert out["subexperiments"][5]["overrides"] == {
        "hidden_size": 32,
        "optimizer": "sgd",
        "betas": [0.9, 0.99],
        "seed": 2,
    }
    assert create_multi_seed_experiments(base, [7], name="SEEDED")["name"] == "SEEDED"


def test_seeds_of_a_sweep(base):
    out = create_multi_seed_experiments(generate_lr_sweep_experiment(base, [0.5]), seeds=(0, 1))
    assert labels(out) == [
        "lstm_16d_sgd_mup_lr0.5_s0",
        "lstm_16d_sgd_mup_lr0.5_s1",
        "lstm_32d_sgd_mup_lr0.5_s0",
        "lstm_32d_sgd_mup_lr0.5_s1",
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda b: generate_lr_sweep_experiment(b, [0.5, 0.25]),
        lambda b: create_multi_lr_experiments(b, [0.5, 0.25]),
        lambda b: create_multi_seed_experiments(b, [0, 1]),
        lambda b: subset_experiments(b, {"lstm_16d_sgd_mup"}),
        lambda b: subset_experiments([b], {"lstm_16d_sgd_mup"}),
    ],
)
def test_inputs_are_not_mutated_nor_shared(base, call):
    before = copy.deepcopy(base)
    out = call(base)
    assert base == before
    for g in out if isinstance(out, list) else [out]:
        for s in g["subexperiments"]:
            s["overrides"]["betas"].append(0.0)  # editing the output...
    assert base == before  # ...leaves the input alone


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b: generate_lr_sweep_experiment(b, []), "learning_rates must be a non-empty"),
        (lambda b: generate_lr_sweep_experiment(b, ["0.1"]), "got '0.1'"),
        (lambda b: create_multi_lr_experiments(b, [True]), "got True"),
        (lambda b: create_multi_seed_experiments(b, [0.5]), "seeds must be a non-empty"),
        (
            lambda b: generate_lr_sweep_experiment(b, [0.1, 0.1]),
            "duplicate labels: 'lstm_16d_sgd_mup_lr0.1' (in groups BASE_lr_sweep, BASE_lr_sweep)",
        ),
        # Equal to 6 significant digits: the labels collide, so it is refused.
        (
            lambda b: generate_lr_sweep_experiment(b, [1e-3, 1.0000001e-3]),
            "duplicate labels: 'lstm_16d_sgd_mup_lr0.001'",
        ),
        (lambda b: create_multi_seed_experiments(b, [1, 1]), "'lstm_16d_sgd_mup_s1'"),
        (lambda b: generate_lr_sweep_experiment([b], [0.1]), "got list"),
    ],
)
def test_bad_expansion_arguments(base, call, message):
    with pytest.raises(ValueError) as err:
        call(base)
    assert message in str(err.value)


# --- subset ------------------------------------------------------------------------------


def test_subset_keeps_group_order_and_shape(base):
    other = group("OTHER", sub("x"), sub("y"))
    assert subset_experiments(base, ["lstm_32d_sgd_mup"]) == group(
        "BASE", base["subexperiments"][1]
    )
    assert subset_experiments([base, other], {"y", "lstm_16d_sgd_mup"}) == [
        group("BASE", base["subexperiments"][0]),
        group("OTHER", sub("y")),
    ]
    assert subset_experiments([base, other], {"x"}) == [group("OTHER", sub("x"))]
    assert subset_experiments(other, "x") == group("OTHER", sub("x"))  # one str: one label


@pytest.mark.parametrize(
    "wanted, message",
    [
        (
            {"lstm_61d_sgd_mup"},
            "subset_experiments: no sub-experiment labelled 'lstm_61d_sgd_mup' "
            "(did you mean lstm_16d_sgd_mup, lstm_32d_sgd_mup?)",
        ),
        (
            {"lstm_16d_sgd_mup", "zzz", "lstm_32d_sgd_mu"},
            "subset_experiments: no sub-experiment labelled 'lstm_32d_sgd_mu' "
            "(did you mean lstm_32d_sgd_mup, lstm_16d_sgd_mup?); "
            "no sub-experiment labelled 'zzz' (no close match among 2 labels)",
        ),
        (set(), "subset_experiments: no labels wanted; pass a set of labels to keep"),
    ],
)
def test_subset_errors_suggest(base, wanted, message):
    with pytest.raises(ValueError) as err:
        subset_experiments(base, wanted)
    assert str(err.value) == message


# --- checks --------------------------------------------------------------------------


def test_unique_labels_names_every_duplicate_and_its_groups():
    a = group("A", sub("x"), sub("y"), sub("x"))
    b = group("B", sub("y"), sub("z"))
    with pytest.raises(ValueError) as err:
        check_unique_labels([a, b])
    assert str(err.value) == (
        "duplicate labels: 'x' (in groups A, A); 'y' (in groups A, B); labels must be "
        "unique across the selected groups: rename one, or drop one group or run "
        "(subset_experiments)"
    )
    check_unique_labels([group("A", sub("x")), group("B", sub("y"))])
    check_unique_labels(group("A", sub("x")))


def test_unique_labels_checks_structure_first():
    with pytest.raises(ValueError, match="missing key 'subexperiments'"):
        check_unique_labels([{"name": "A"}])


GOOD = group("G", sub("a", learning_rate=0.1))

MALFORMED = [
    (
        ["G"],
        "experiment group: an experiment group must be a dict with exactly the keys name, "
        "subexperiments, got list",
    ),
    (
        {"name": "G", "subexperiment": []},
        "experiment group: unknown key 'subexperiment' (did you mean subexperiments?); an "
        "experiment group has exactly the keys name, subexperiments",
    ),
    (
        {"name": "G", "subexperiments": [], "seed": 0},
        "experiment group: unknown key 'seed'; an experiment group has exactly the keys "
        "name, subexperiments",
    ),
    (
        {"subexperiments": GOOD["subexperiments"]},
        "experiment group: missing key 'name'; an experiment group has exactly the keys "
        "name, subexperiments",
    ),
    (
        {"name": "", "subexperiments": GOOD["subexperiments"]},
        "experiment group: name '' is not a safe folder name; use only letters, digits and "
        ". _ + - (not starting with . or -, at most 128 characters)",
    ),
    (
        {"name": 3, "subexperiments": GOOD["subexperiments"]},
        "experiment group: name 3 is not a safe folder name",
    ),
    (
        {"name": "G", "subexperiments": []},
        "group 'G': subexperiments must be a non-empty list of {'label': ..., 'overrides': "
        "{...}} dicts, got []",
    ),
    (
        {"name": "G", "subexperiments": ({"label": "a", "overrides": {}},)},
        "group 'G': subexperiments must be a non-empty list",
    ),
    (
        group("G", "a"),
        "group 'G', sub-experiment 0: a sub-experiment must be a dict with exactly the keys "
        "label, overrides, got str",
    ),
    (
        group("G", sub("a"), {"label": "b", "overides": {}}),
        "group 'G', sub-experiment 1 (label 'b'): unknown key 'overides' (did you mean "
        "overrides?); a sub-experiment has exactly the keys label, overrides",
    ),
    (
        group("G", {"label": "b"}),
        "group 'G', sub-experiment 0 (label 'b'): missing key 'overrides'",
    ),
    (
        group("G", {"label": 1, "overrides": {}}),
        "group 'G', sub-experiment 0: label 1 is not a safe folder name",
    ),
    (
        group("G", {"label": "a", "overrides": [("learning_rate", 0.1)]}),
        "group 'G', sub-experiment 0 (label 'a'): overrides must be a dict such as "
        "{'learning_rate': 0.01}, got list",
    ),
    (
        group("G", {"label": "a", "overrides": {1: 0.1}}),
        "group 'G', sub-experiment 0 (label 'a'): override keys must be non-empty strings "
        "(an alias such as 'learning_rate' or a path such as 'trainer.max_steps'), got 1",
    ),
]


@pytest.mark.parametrize("bad, message", MALFORMED)
def test_structure_errors(bad, message):
    with pytest.raises(ValueError) as err:
        check_structure(bad)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "label",
    ["", ".hidden", "..", "-rf", "a/b", "a b", "lr=0.1", "ü", "a" * 129, "a\nb", "x*"],
)
def test_unsafe_labels_are_refused(label):
    with pytest.raises(ValueError) as err:
        check_structure(group("G", sub(label)))
    assert f"label {label!r} is not a safe folder name; use only letters, digits" in str(err.value)


@pytest.mark.parametrize(
    "label", ["a", "lstm_16d_sgd_mup_lr0.25", "x_lr1e-05", "x_lr1e+06", "0", "_a", "+a", "a" * 128]
)
def test_safe_labels_pass(label):
    check_structure(group("G", sub(label)))


def test_a_suffix_past_128_characters_is_refused():
    with pytest.raises(ValueError, match="is not a safe folder name"):
        generate_lr_sweep_experiment(group("G", sub("a" * 126)), [0.5])


# --- the shipped groups ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_group_is_well_formed(name):
    g = GROUPS[name]
    check_structure(g)
    check_unique_labels(g)
    assert getattr(ex, name) is g  # the registry name is the variable name


def module_groups() -> dict[str, dict]:
    """Every group bound to an upper-case name in the module, by that name."""
    return {
        attr: value
        for attr, value in vars(ex).items()
        if attr.isupper() and isinstance(value, dict) and "subexperiments" in value
    }


def test_the_registry_holds_every_group_the_module_defines():
    """A group defined but left out of GROUPS could not be picked by --experiments."""
    assert {id(g) for g in module_groups().values()} == {id(g) for g in GROUPS.values()}
    assert named_groups(ex) == {name: [g] for name, g in GROUPS.items()}


def test_the_default_is_a_registered_group():
    assert any(EXPERIMENTS is g for g in GROUPS.values())
    assert select(ex, None, None) == [EXPERIMENTS]
    for name, g in GROUPS.items():
        assert select(ex, name, None) == [g]


def test_a_label_means_one_run_across_the_registry():
    """Groups may repeat a run under its label, never give one label two meanings: a
    report reading several groups' folders identifies a run by its label."""
    seen = {}
    for g in GROUPS.values():
        for s in g["subexperiments"]:
            assert seen.setdefault(s["label"], s["overrides"]) == s["overrides"], s["label"]


def test_groups_sharing_a_label_cannot_be_selected_together():
    """The module docstring's rule: any two groups selected together share no label."""
    overlapping = set()
    for a, b in itertools.combinations(GROUPS, 2):
        shared = set(labels(GROUPS[a])) & set(labels(GROUPS[b]))
        if shared:
            overlapping.add((a, b))
            with pytest.raises(ConfigError, match=f"duplicate labels: '{sorted(shared)[0]}"):
                select(ex, f"{a},{b}", None)
        else:
            assert select(ex, f"{a},{b}", None) == [GROUPS[a], GROUPS[b]]
    # The one overlap the docstring names, so that it cannot go stale again.
    assert overlapping == {("LSTM_ADAM_MUP_SCALING", "LSTM_LR_EXPERIMENTS")}


def test_two_groups_sharing_a_label_are_refused_even_for_the_same_run(tmp_path):
    """The module docstring's rule: a label names one run, so a shared one is refused."""
    same = sub("lstm_16d_sgd_mup", hidden_size=16)
    text = f"A = {group('A', same)!r}\nB = {group('B', same)!r}\n"
    module = load_definitions(write_defs(tmp_path, text))
    with pytest.raises(
        ConfigError, match=r"duplicate labels: 'lstm_16d_sgd_mup' \(in groups A, B\)"
    ):
        select(module, "A,B", None)


def sweep_aliases() -> set[str]:
    # The alias table lives with the runner (sweep.py, or runs.py once it moves there).
    try:
        from lstm_lightning.runs import ALIASES
    except ImportError:
        from lstm_lightning.sweep import ALIASES
    return set(ALIASES)


def test_every_override_key_is_a_sweep_alias():
    aliases = sweep_aliases()
    for name, g in GROUPS.items():
        for s in g["subexperiments"]:
            assert set(s["overrides"]) <= aliases, (name, s["label"])


LABEL = re.compile(
    r"lstm_(?P<hidden_size>\d+)d_(?P<optimizer>sgd|adam)_(?P<parametrization>sp|mup)"
    r"(_lr(?P<learning_rate>[0-9.e+-]+))?(_s(?P<seed>\d+))?"
)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_label_states_its_overrides(name):
    """A label is what the report and the run folder show: it must say what the run is."""
    for s in GROUPS[name]["subexperiments"]:
        claim = {k: v for k, v in LABEL.fullmatch(s["label"]).groupdict().items() if v}
        o = s["overrides"]
        assert set(o) == set(claim), s["label"]
        assert (o["hidden_size"], o["optimizer"], o["parametrization"]) == (
            int(claim["hidden_size"]),
            claim["optimizer"],
            claim["parametrization"],
        )
        assert f"{o['learning_rate']:g}" == claim["learning_rate"], s["label"]
        assert str(o.get("seed")) == claim.get("seed", "None"), s["label"]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_group_is_a_full_grid_without_repeats(name):
    """Within each optimizer x parametrization, every width meets every rate and seed."""
    runs = [s["overrides"] for s in GROUPS[name]["subexperiments"]]
    cells: dict[tuple, set] = {}
    for o in runs:
        cell = cells.setdefault((o["optimizer"], o["parametrization"]), set())
        cell.add((o["hidden_size"], o["learning_rate"], o.get("seed")))
    assert sum(len(c) for c in cells.values()) == len(runs)  # no run twice
    for cell in cells.values():
        widths, rates, seeds = ({t[i] for t in cell} for i in range(3))
        assert cell == set(itertools.product(widths, rates, seeds))


def test_default_group_exact():
    subs = EXPERIMENTS["subexperiments"]
    assert labels(EXPERIMENTS)[:8] == [
        "lstm_16d_sgd_mup_lr0.125",
        "lstm_16d_sgd_mup_lr0.25",
        "lstm_16d_sgd_mup_lr0.5",
        "lstm_16d_sgd_mup_lr1",
        "lstm_16d_sgd_mup_lr2",
        "lstm_16d_sgd_mup_lr4",
        "lstm_16d_sgd_mup_lr8",
        "lstm_16d_sgd_mup_lr16",
    ]
    assert labels(EXPERIMENTS)[8::8] == [
        "lstm_24d_sgd_mup_lr0.125",
        "lstm_32d_sgd_mup_lr0.125",
        "lstm_48d_sgd_mup_lr0.125",
        "lstm_64d_sgd_mup_lr0.125",
    ]
    assert subs[1]["overrides"] == {
        "hidden_size": 16,
        "optimizer": "sgd",
        "parametrization": "mup",
        "learning_rate": 0.25,
    }


def test_transfer_study_covers_the_grid():
    """MUP_SCALING_EXPERIMENTS: 2 optimizers x 2 parametrizations x 4 widths x 8 rates,
    each at 3 seeds."""
    runs = [s["overrides"] for s in ex.MUP_SCALING_EXPERIMENTS["subexperiments"]]
    cells = Counter(
        (o["optimizer"], o["parametrization"], o["hidden_size"], o["learning_rate"]) for o in runs
    )
    assert set(cells.values()) == {3}
    assert {o["seed"] for o in runs} == {0, 1, 2}
    grid = {
        (o["optimizer"], o["parametrization"], o["hidden_size"], o["learning_rate"])
        for o in (s["overrides"] for s in ex.MUP_SCALING_EXPERIMENTS["subexperiments"])
    }
    widths = {w for _, _, w, _ in grid}
    assert len(widths) >= 4 and max(widths) / min(widths) >= 8
    for opt, sweep in ex.LR_SWEEPS.items():
        for par in ("sp", "mup"):
            assert {(w, lr) for o, p, w, lr in grid if (o, p) == (opt, par)} == {
                (w, lr) for w in widths for lr in sweep
            }


def test_each_group_uses_its_optimizer_sweep():
    for name, g in GROUPS.items():
        for s in g["subexperiments"]:
            o = s["overrides"]
            sweep = (
                ex.STANDARD_LR_SWEEP
                if name == "LSTM_LR_EXPERIMENTS"
                else ex.LR_SWEEPS[o["optimizer"]]
            )
            assert o["learning_rate"] in sweep, s["label"]
            assert s["label"].startswith(
                f"lstm_{o['hidden_size']}d_{o['optimizer']}_{o['parametrization']}_lr"
            )


# --- learning-rate sweeps --------------------------------------------------------------

SWEEPS = ["STANDARD_LR_SWEEP", "NARROW_LR_SWEEP", "ADAM_LR_SWEEP", "SGD_LR_SWEEP"]


@pytest.mark.parametrize("name", SWEEPS)
def test_sweeps_are_ascending_powers_of_two(name):
    sweep = getattr(ex, name)
    assert isinstance(sweep, tuple) and all(type(lr) is float for lr in sweep)
    exponents = [math.log2(lr) for lr in sweep]
    assert exponents == [float(round(e)) for e in exponents]
    assert all(b - a == 1 for a, b in zip(exponents, exponents[1:]))  # steps of 2x


# Measured best rates (log2) at 300 steps that each optimizer's sweep must bracket
# (the comment above ADAM_LR_SWEEP): Adam near 2^-6..2^-4, SGD-muP near 2^2..2^3.
MEASURED_OPTIMA = {"adam": (-6, -4), "sgd": (2, 3)}


@pytest.mark.parametrize("optimizer", sorted(ex.LR_SWEEPS))
def test_each_sweep_brackets_its_optimizer_optimum(optimizer):
    exponents = [math.log2(lr) for lr in ex.LR_SWEEPS[optimizer]]
    low, high = MEASURED_OPTIMA[optimizer]
    assert min(exponents) < low and high < max(exponents)  # rates on both sides
    assert {float(e) for e in range(low, high + 1)} <= set(exponents)


def test_standard_and_narrow_sweeps_cover_the_optimizer_sweeps():
    union = set(ex.ADAM_LR_SWEEP) | set(ex.SGD_LR_SWEEP)
    assert set(ex.STANDARD_LR_SWEEP) == union  # one grid holding both
    assert set(ex.NARROW_LR_SWEEP) < set(ex.ADAM_LR_SWEEP)  # a quick Adam check
    low, high = MEASURED_OPTIMA["adam"]
    assert min(ex.NARROW_LR_SWEEP) < 2.0**low and 2.0**high < max(ex.NARROW_LR_SWEEP)


# --- selection ----------------------------------------------------------------------


def write_defs(tmp_path, text: str, name: str = "defs.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_definitions_path_means_this_package():
    assert load_definitions(None) is ex


def test_a_user_file_is_loaded_and_its_groups_named(tmp_path):
    g, h = group("g", sub("a")), group("h", sub("b"))
    module = load_definitions(
        write_defs(tmp_path, f"EXPERIMENTS = {g!r}\nMINE = [{g!r}, {h!r}]\nONE = {h!r}\n")
    )
    found = named_groups(module)
    assert found == {"EXPERIMENTS": [g], "g": [g], "MINE": [g, h], "ONE": [h], "h": [h]}
    assert select(module, None, None) == [g]
    assert select(module, "MINE", "b") == [h]
    assert select(module, "g,ONE", None) == [g, h]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("X = 1\nEXPERIMENTS = {'name': \n", 2, "SyntaxError: "),
        ("import math\n\nX = math.nope\n", 3, "AttributeError: module 'math' has no attribute"),
        ("def f():\n    raise RuntimeError('two\\nlines')\n\nf()\n", 2, "RuntimeError: two lines"),
    ],
)
def test_a_broken_definitions_file_is_one_line_naming_file_and_line(tmp_path, text, line, message):
    path = write_defs(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_definitions(path)
    (only,) = str(err.value).splitlines()
    assert only.startswith(f"--definitions: {path}, line {line}: failed to import: {message}")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: str(d), "is a directory, not a Python file"),
        (lambda d: str(d / "nope.py"), "does not exist"),
        (lambda d: write_defs(d, "EXPERIMENTS = 1\n", "defs.yaml"), "is not a Python file (.py)"),
    ],
)
def test_a_definitions_path_that_is_not_a_python_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_definitions(path)
    assert str(err.value) == f"--definitions: {path} {message}"


def test_select_teaches(tmp_path):
    module = load_definitions(write_defs(tmp_path, f"GG = {group('gg', sub('a'))!r}\n"))
    with pytest.raises(ConfigError) as err:
        select(module, "g", None)
    assert str(err.value) == (
        "--experiments: no group named 'g' (did you mean gg?); available: GG, gg"
    )
    with pytest.raises(ConfigError, match="define no EXPERIMENTS; set it or pass --experiments"):
        select(module, None, None)
    with pytest.raises(ConfigError, match="no sub-experiment labelled 'b'"):
        select(module, "GG", "b")
    with pytest.raises(ConfigError, match="duplicate labels: 'a' \\(in groups gg, gg\\)"):
        select(module, "GG,gg", None)


def test_select_checks_structure_of_a_named_group(tmp_path):
    text = "BAD = {'name': 'b', 'subexperiments': [{'label': 'a b', 'overrides': {}}]}\n"
    with pytest.raises(ConfigError, match="label 'a b' is not a safe folder name"):
        select(load_definitions(write_defs(tmp_path, text)), "BAD", None)


# --- doctests ----------------------------------------------------------------------------


def test_doctests_pass():
    result = doctest.testmod(ex, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted >= 5  # every public docstring has examples
    result = doctest.testmod(lstm_lightning.derive, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 10  # the utilities' examples
    result = doctest.testmod(lstm_lightning.groups, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 4
