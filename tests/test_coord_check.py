"""Tests for the coordinate check: muP slopes flat, SP logits growing, outputs and flags."""

import csv
import inspect
from pathlib import Path

import pytest

from lstm_lightning import coord_check as cc
from lstm_lightning.cli import EXIT_CONFIG_ERROR, main, run_command
from lstm_lightning.errors import ConfigError
from lstm_lightning.module import LanguageModel

ROOT = Path(__file__).resolve().parent.parent

# Small but honest: one layer (the model default), widths 64..512 (at 32..256 the base
# width's finite-size effect tilts the cell state; measured muP cell0 0.18 there), Adam
# at a large lr so that after 3 steps the updates dominate the init (muP logits start at
# m^-1/2 and SP's width-proportional logit update shows). Measured at these settings:
# muP slopes within +-0.08, SP logits 0.43. With the forget-gate bias at 1, the default
# until 2026-12-02: at today's 0, SP's logits slope here is 0.36 (the defaults are checked
# by test_check_passes_on_the_defaults).
CONFIG = """\
model:
  num_layers: 1
  forget_bias: 1.0
data:
  seq_len: 32
  batch_size: 16
  synthetic_tokens: 65536
"""
WIDTHS = "64,128,256,512"
STEPS, SEEDS, LR = 3, 2, 0.1
LAYERS = ("embedding", "lstm0", "cell0", "logits")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "coord.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture(scope="module")
def run(config, tmp_path_factory):
    """One full run (sp and mup) with --check; returns (exit code, out dir, records)."""
    out = tmp_path_factory.mktemp("coord")
    code = cc.main(
        config=config,
        widths=WIDTHS,
        steps=STEPS,
        seeds=SEEDS,
        learning_rate=LR,
        out=str(out),
        check=True,
    )
    with open(out / "coord_check.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    records = [
        {
            **r,
            "width": int(r["width"]),
            "seed": int(r["seed"]),
            "step": int(r["step"]),
            "mean_abs": float(r["mean_abs"]),
            "mean_abs_delta": float(r["mean_abs_delta"]),
        }
        for r in rows
    ]
    return code, out, records


@pytest.mark.slow
def test_mup_slopes_flat(run):
    table = cc.slopes(run[2])
    for layer in LAYERS:
        assert abs(table[("mup", layer)]) <= cc.TOLERANCE, (layer, table)


def test_sp_logits_grow_with_width(run):
    assert cc.slopes(run[2])[("sp", "logits")] >= 0.4


def test_init_is_step_zero(run):
    # At t=0 nothing has moved yet; afterwards the logits have.
    records = run[2]
    assert all(r["mean_abs_delta"] == 0.0 for r in records if r["step"] == 0)
    assert all(r["mean_abs_delta"] > 0 for r in records if r["step"] > 0 and r["layer"] == "logits")


def test_csv_and_png(run):
    _, out, records = run
    with open(out / "coord_check.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert tuple(header) == cc.COLUMNS
    assert len(records) == 2 * 4 * SEEDS * (STEPS + 1) * len(LAYERS)
    assert {r["layer"] for r in records} == set(LAYERS)
    assert (out / "coord_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_check_passes_on_mup(run):
    assert run[0] == 0


def test_check_fails_out_of_bounds(run, monkeypatch, capsys):
    table = cc.slopes(run[2])
    # SP fed as if it were muP: its logits slope is out of bounds.
    as_mup = {("mup", layer): s for (p, layer), s in table.items() if p == "sp"}
    assert cc.check_slopes(as_mup) == 1
    assert "mup logits" in capsys.readouterr().out
    monkeypatch.setattr(cc, "TOLERANCE", 1e-6)
    assert cc.check_slopes(table) == 1


def test_cli_flags(config, tmp_path, capsys):
    # The CLI builds flags from main's signature; --check is a switch.
    args = ["--config", config, "--widths", "16,32", "--steps", "1", "--seeds", "1"]
    args += ["--parametrization", "mup", "--out", str(tmp_path), "--no_check"]
    assert run_command("coord-check", args) == 0
    assert "cell0" in capsys.readouterr().out
    assert (tmp_path / "coord_check.csv").exists()


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"parametrization": "sp,ntk"}, "--parametrization"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"widths": "32,abc"}, "--widths"),
        ({"widths": "32,-64"}, "--widths"),
        ({"widths": "64"}, "--widths"),
        ({"widths": "64,64"}, "--widths"),
        ({"steps": 0}, "--steps"),
        ({"seeds": 0}, "--seeds"),
    ],
)
def test_bad_input(kwargs, flag, tmp_path):
    with pytest.raises(ConfigError, match=flag) as err:
        cc.main(**{"out": str(tmp_path), **kwargs})
    assert "\n" not in str(err.value)


def test_bad_config_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hiden_size: 64\n")
    with pytest.raises(ConfigError, match="--config: .*hiden_size.*did you mean model.hidden_size"):
        cc.main(config=str(path), out=str(tmp_path))


def test_config_is_read_as_fit_reads_it(tmp_path):
    # The fit parser: a whole fit config (trainer: section included) and its defaults.
    model, data = cc.load_config(str(ROOT / "configs" / "lstm.yaml"))
    assert (model["hidden_size"], model["learning_rate"], data["seq_len"]) == (128, 0.04, 64)
    path = tmp_path / "base.yaml"
    path.write_text("model:\n  base_hidden_size: 64\n")
    assert cc.load_config(str(path))[0]["base_hidden_size"] == 64
    default = inspect.signature(LanguageModel).parameters["base_hidden_size"].default
    assert cc.load_config(None)[0]["base_hidden_size"] == default
    model_kw = {**cc.load_config(str(path))[0], "vocab_size": 16}
    model, _ = cc.build(model_kw, "mup", 128, steps=1)
    assert model.width_mult == 2  # 128 / 64


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("", "is empty"), ("model: [1,\n", "not valid YAML")],
)
def test_bad_config_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=f"--config: .*{message}") as err:
        cc.main(config=str(path), out=str(tmp_path))
    assert "\n" not in str(err.value)


def test_out_naming_a_file_is_refused_by_the_cli(tmp_path, capsys):
    out = tmp_path / "taken.txt"
    out.write_text("mine")
    assert main(["coord-check", "--out", str(out)]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --out: {out} is a file; name a folder for coord_check.csv and coord_check.png"
    ]
    assert out.read_text() == "mine"


@pytest.mark.slow
def test_check_passes_on_the_defaults(tmp_path):
    """The issue's bar, as a user's CI would run it: `cli.py coord-check --check` with
    every default (widths 32..512, 10 steps, 3 seeds, Adam at the model's lr) exits 0."""
    out = tmp_path / "cc"
    assert run_command("coord-check", ["--out", str(out), "--check"]) == 0
    assert (out / "coord_check.csv").exists() and (out / "coord_check.png").exists()
