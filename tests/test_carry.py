"""The transfer step of μTransfer (``cli.py transfer``, ``lstm_lightning.carry``) and the
config-hash compatibility that lets model keys be added without refusing old runs."""

from __future__ import annotations

import json

import yaml

from lstm_lightning import runs as folders
from lstm_lightning.cli import main
from tests.conftest import group

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
    result["config_hash"] = folders.config_hash(text)
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
