"""The transfer step of μTransfer (``cli.py transfer``, ``lstm_lightning.carry``) and the
config-hash compatibility that lets model keys be added without refusing old runs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lstm_lightning import carry, sweep
from lstm_lightning.cli import main
from lstm_lightning.config_hash import config_hash
from tests.conftest import TINY_BASE, group

# --- config hash: keys an upgrade added ----------------------------------------------------


def as_older_version(project, label: str, drop: list[str], change: dict | None = None) -> None:
    """Rewrite a completed run as an older version would have left it: its config.yaml
    without the model keys ``drop`` (and with ``change`` applied), its hash of that file."""
    run = project.runs / "g" / label
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in drop:
        del config["model"][key]
    config["model"].update(change or {})
    text = yaml.safe_dump(config)
    (run / "config.yaml").write_text(text)
    result = project.result("g", label)
    result["config_hash"] = config_hash(text)
    (run / "result.json").write_text(json.dumps(result))


NEW_KEYS = ["input_lr_mult", "hidden_lr_mult", "output_lr_mult", "eps_scaling"]


def test_a_run_from_before_added_keys_is_still_completed(project, capsys):
    assert main(project.args("--labels", "a")) == 0
    as_older_version(project, "a", NEW_KEYS)
    before = (project.runs / "g" / "a" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(project.args("--labels", "a")) == 0
    assert "1 runs, 1 already done, 0 to run" in capsys.readouterr().err
    assert (project.runs / "g" / "a" / "result.json").stat().st_mtime_ns == before


def test_a_changed_value_or_an_added_key_off_its_default_is_refused(project, capsys):
    assert main(project.args("--labels", "a")) == 0
    as_older_version(project, "a", NEW_KEYS, change={"learning_rate": 0.05})
    capsys.readouterr()
    assert main(project.args("--labels", "a")) == 2
    assert "model.learning_rate 0.05 -> 0.02" in capsys.readouterr().err
    # The added key itself away from its default: the run would train differently.
    as_older_version(project, "a", [], change={"learning_rate": 0.02})
    project.defs(group("g", ("a", {"learning_rate": 0.02, "output_lr_mult": 2.0})))
    assert main(project.args("--labels", "a")) == 2
    assert "model.output_lr_mult None -> 2.0" in capsys.readouterr().err


# --- cli.py transfer: a study made by hand ----------------------------------------------------

PROXY = {"hidden_size": 16, "base_hidden_size": 8, "parametrization": "mup"}
LR = FloatDistribution(1e-4, 0.3, log=True)
MULT = FloatDistribution(0.125, 8.0, log=True)
ZERO = CategoricalDistribution([True, False])
BEST = {"learning_rate": 0.03, "model.output_lr_mult": 2.0, "readout_zero_init": True}


def make_study(runs: Path, name: str = "s", trials: list | None = None) -> Path:
    """A study as cli.py tune leaves it: study.yaml and the journal, trials added by hand.
    By default: a worse trial, the best (``BEST``, 1.5), a failed and a running one."""
    folder = runs / name
    folder.mkdir(parents=True)
    definition = {
        "study": name,
        "base_config": "base.yaml",
        "base_config_text": yaml.safe_dump(TINY_BASE),  # its model.base_hidden_size is 16
        "space": {"learning_rate": {"low": 1e-4, "high": 0.3, "log": True}},
        "sampler": "random",
        "seed": 0,
        "objective": "val/loss",
        "transfer": True,
        "proxy": PROXY,
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(definition))
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    dists = {"learning_rate": LR, "model.output_lr_mult": MULT, "readout_zero_init": ZERO}
    default = [
        (TrialState.COMPLETE, {**BEST, "learning_rate": 0.01}, 2.0),
        (TrialState.COMPLETE, BEST, 1.5),
        (TrialState.FAIL, {**BEST, "learning_rate": 0.2}, None),
        (TrialState.RUNNING, {**BEST, "learning_rate": 0.1}, None),
    ]
    for state, params, value in default if trials is None else trials:
        study.add_trial(
            optuna.trial.create_trial(state=state, params=params, distributions=dists, value=value)
        )
    return folder


def transfer(runs: Path, *args: str) -> int:
    return main(["transfer", "--runs_dir", str(runs), "--workers", "1", *args])


def test_transfer_builds_each_width_and_seed_from_the_best_trial(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_study(runs)
    recipe = carry.from_study(runs, "s")
    group = carry.transfer_group(recipe, [32, 64], [0, 1], None)
    prepared, _, _ = sweep.prepare_groups([group], recipe.base, sweep.Selection(runs_dir=str(runs)))
    assert [r.name for r in prepared] == [
        "s.transfer/w32_seed0",
        "s.transfer/w32_seed1",
        "s.transfer/w64_seed0",
        "s.transfer/w64_seed1",
    ]
    for run, (width, seed) in zip(prepared, [(32, 0), (32, 1), (64, 0), (64, 1)]):
        c = run.config
        assert (c["model.hidden_size"], c["seed_everything"]) == (width, seed)
        assert c["model.base_hidden_size"] == 8  # the proxy's, not the base config's 16
        assert c["model.learning_rate"] == 0.03 and c["model.output_lr_mult"] == 2.0
        assert c["model.readout_zero_init"] is True and c["model.parametrization"] == "mup"
        assert c["data.synthetic_vocab"] == 8  # the rest is the study's base config
        assert run.dir == runs / "s.transfer" / f"w{width}_seed{seed}"
    # The same through the command, as a dry run: it prints them and writes nothing.
    before = sorted(p.name for p in runs.rglob("*"))
    assert transfer(runs, "--study", "s", "--widths", "32,64", "--seeds", "0,1", "--dry_run") == 0
    out = capsys.readouterr().out
    assert "4 runs in the selection" in out and "s.transfer/w64_seed1" in out
    assert "learning_rate: 0.03" in out and "trial 1, val/loss 1.5" in out
    assert sorted(p.name for p in runs.rglob("*")) == before


def test_parametrization_and_config_flags(tmp_path):
    runs = tmp_path / "runs"
    make_study(runs)
    base = tmp_path / "other.yaml"
    base.write_text(yaml.safe_dump({**TINY_BASE, "data": {**TINY_BASE["data"], "seq_len": 4}}))
    args = ["--study", "s", "--widths", "24", "--seeds", "3", "--config", str(base)]
    selection = sweep.Selection(runs_dir=str(runs))
    recipe = carry.from_study(runs, "s")
    group = carry.transfer_group(recipe, [24], [3], "sp")
    (run,), _, _ = sweep.prepare_groups([group], sweep.base_config(str(base)), selection)
    assert run.config["model.parametrization"] == "sp" and run.config["data.seq_len"] == 4
    assert run.config["model.base_hidden_size"] == 8
    assert transfer(runs, *args, "--parametrization", "sp", "--dry_run") == 0


def read_config(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "runs" / "lstm").glob("version_*/config.yaml")
    return yaml.safe_load(path.read_text())


def test_best_yaml_round_trips_through_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    make_study(runs)
    best = runs / "s" / "best.yaml"
    best.write_text(carry.fragment(carry.from_study(runs, "s")))
    assert best.read_text().startswith("# The best trial of study s: trial 1")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TINY_BASE))
    fit = ["fit", "--config", str(base), "--config", str(best), "--model.hidden_size", "32"]
    assert main([*fit, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"]) == 0
    model = read_config(tmp_path)["model"]
    assert model["hidden_size"] == 32 and model["base_hidden_size"] == 8
    assert model["learning_rate"] == 0.03 and model["output_lr_mult"] == 2.0
    assert model["readout_zero_init"] is True
    # --from_file carries that same file without its study.
    recipe = carry.read_best(str(best))
    assert recipe.name == "best" and recipe.overrides["model.learning_rate"] == 0.03


def test_a_tiny_transfer_runs_through_the_runner_and_the_report(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_study(runs)
    assert transfer(runs, "--study", "s", "--widths", "16,24", "--seeds", "0") == 0
    for label, width in (("w16_seed0", 16), ("w24_seed0", 24)):
        result = json.loads((runs / "s.transfer" / label / "result.json").read_text())
        assert result["status"] == "completed" and result["hparams"]["hidden_size"] == width
        assert result["group"] == "s.transfer" and result["hparams"]["learning_rate"] == 0.03
    best = yaml.safe_load((runs / "s" / "best.yaml").read_text())
    assert best["model"]["learning_rate"] == 0.03 and best["model"]["base_hidden_size"] == 8
    capsys.readouterr()
    assert transfer(runs, "--study", "s", "--widths", "16,24", "--seeds", "0") == 0
    assert "2 already done, 0 to run" in capsys.readouterr().err  # a rerun resumes the group
    assert main(["report", "--runs_dir", str(runs)]) == 0
    csv = (runs / "results.csv").read_text()
    assert "s.transfer" in csv and "w24_seed0" in csv


# --- bad input: one line, exit 2 ------------------------------------------------------------


def one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--study", "t"], "--study t: no study in"),
        (["--study", "s", "--widths", "0,256"], "--widths 0,256: give positive integers"),
        (["--study", "s", "--seeds", "a"], "--seeds a: give integers >= 0"),
        (["--study", "s", "--seeds", "1,-1"], "--seeds 1,-1: give integers >= 0"),
        (["--study", "s", "--parametrization", "mu"], "use sp or mup (did you mean mup"),
        ([], "give --study NAME"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capsys, args, says):
    runs = tmp_path / "runs"
    make_study(runs)
    assert transfer(runs, *args) == 2
    assert says in one_error(capsys)
    assert not (runs / "s.transfer").exists()


def test_a_study_without_journal_or_complete_trial_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_study(runs, "s")
    assert transfer(runs, "--study", "ss") == 2
    assert "(did you mean s?)" in one_error(capsys)
    assert transfer(runs, "--study", "x") == 2
    assert "(studies there: s)" in one_error(capsys)
    (runs / "s" / "study.journal").unlink()
    assert transfer(runs, "--study", "s") == 2
    assert "study.journal is missing" in one_error(capsys)
    make_study(runs, "none", trials=[(TrialState.FAIL, BEST, None)])
    assert transfer(runs, "--study", "none") == 2
    assert "no complete trial yet (1 trial(s)" in one_error(capsys)
    (runs / "none" / "study.yaml").write_text("proxy: {hidden_size: 16}\n")
    assert transfer(runs, "--study", "none") == 2
    assert "study.yaml: not a study definition (KeyError" in one_error(capsys)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- 1\n- 2\n", "not a mapping"),
        ("model: {learning_rat: 0.1}\n", "unknown key model.learning_rat (did you mean"),
        ("modle: {learning_rate: 0.1}\n", "unknown key modle.learning_rate (did you mean model"),
    ],
)
def test_a_bad_best_yaml_is_one_line(tmp_path, capsys, text, says):
    best = tmp_path / "best.yaml"
    best.write_text(text)
    assert transfer(tmp_path / "runs", "--from_file", str(best), "--dry_run") == 2
    assert says in one_error(capsys)
