"""Subnormal floats flushed on every thread a run computes on, and only while it runs
(``model.flush_subnormals``, ``lstm_lightning.subnormal``)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lstm_lightning import subnormal
from lstm_lightning.cli import main
from lstm_lightning.config_hash import differing
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.fit import build_cli
from lstm_lightning.module import LanguageModel
from tests.conftest import group

# Adam's eps as a subnormal: flushed, a parameter whose gradient is 0 (an embedding row
# its batch never shows) steps by 0 / (0 + 0) = NaN and the run diverges; computed, by 0.
EPS_TINY = {"eps": 1e-40, "synthetic_vocab": 64}


def flushed_share(threads: int = 2) -> float:
    """The share of a 2^22-element tensor of subnormals that x * 1 makes 0, on ``threads``
    threads (each takes a slice: every one of them must flush for the share to be 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = subnormal.subnormals(1 << 22)  # not from a float: that could flush already
        return float(((x * 1.0) == 0).float().mean())
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def computed_around():
    """Every test starts and leaves the process computing subnormals, on every thread (a
    fit that raised in an earlier test keeps its run's setting: no teardown)."""
    subnormal.set_flush(False)
    yield
    subnormal.set_flush(False)


class Probe(Callback):
    """What share of subnormals the run's threads flush, seen from inside the run."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.share = flushed_share(torch.get_num_threads())


def test_set_flush_reaches_every_thread_both_ways():
    assert flushed_share() == 0.0
    subnormal.set_flush(True)
    assert flushed_share() == 1.0
    assert subnormal.flushing()
    subnormal.set_flush(False)
    assert flushed_share() == 0.0 and not subnormal.flushing()


def test_threads_torch_keeps_idle_are_set_too():
    """A thread of a larger team waits in libgomp's pool while torch runs on one, and
    computes again when torch runs on two: it must hold the setting made meanwhile."""
    torch.set_num_threads(2)
    try:
        subnormal.set_flush(True)
        torch.set_num_threads(1)
        subnormal.set_flush(False)
    finally:
        torch.set_num_threads(1)
    assert flushed_share(threads=2) == 0.0


def test_flushed_restores_the_setting_before():
    with subnormal.flushed(True):
        assert flushed_share() == 1.0
    assert flushed_share() == 0.0


def fit_share(model: LanguageModel, tmp_path, *callbacks: Callback) -> float:
    """Fit ``model`` 2 steps under a Trainer built by hand, on 2 threads: the share of
    subnormals its threads flush inside the run."""
    data = SequenceDataModule(
        synthetic_tokens=4096, synthetic_states=4, synthetic_vocab=8, seq_len=8, batch_size=4
    )
    probe = Probe()
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe, *callbacks],
        default_root_dir=tmp_path,
    )
    torch.set_num_threads(2)
    try:
        trainer.fit(model, datamodule=data)
    finally:
        torch.set_num_threads(1)
    return probe.share


@pytest.mark.parametrize("on", [True, False])
def test_a_fit_flushes_on_every_thread_unless_told_not_to(on, tmp_path):
    """Flushed on every thread while the run trains (a model built in Python has the
    key on), computed with the key off; after the run the process is as it was (here:
    the opposite of the run's setting)."""
    subnormal.set_flush(not on)
    kw = {} if on else {"flush_subnormals": False}
    model = LanguageModel(vocab_size=8, hidden_size=8, base_hidden_size=8, **kw)
    assert fit_share(model, tmp_path) == float(on)
    assert flushed_share() == float(not on)


class Fails(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        raise RuntimeError("a run that raises after its setup")


def test_a_fit_that_raises_gives_the_process_its_setting_back(tmp_path):
    model = LanguageModel(vocab_size=8, hidden_size=8, base_hidden_size=8)
    with pytest.raises(RuntimeError, match="raises after its setup"):
        fit_share(model, tmp_path, Fails())
    assert flushed_share() == 0.0


@pytest.mark.parametrize("config", [False, True])
def test_the_key_parses_from_the_command_line_and_a_config(tiny, tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"flush_subnormals": False}}))
    key = ["--config", str(path)] if config else ["--model.flush_subnormals", "false"]
    assert build_cli(tiny(*key), run=False).model.hparams.flush_subnormals is False
    assert build_cli(tiny(), run=False).model.hparams.flush_subnormals is True


def test_run_folders_written_before_the_key_still_match():
    old = yaml.safe_dump({"model": {"hidden_size": 16}})
    now = yaml.safe_dump({"model": {"hidden_size": 16, "flush_subnormals": True}})
    off = yaml.safe_dump({"model": {"hidden_size": 16, "flush_subnormals": False}})
    assert differing(old, now) == []
    assert differing(old, off) == ["model.flush_subnormals"]


def test_runs_in_one_process_each_get_their_own_setting(project, tmp_path):
    """A run with the key off, alone; then one with it on and the same run again, in one
    sweep process (workers=1): the second time, after a run that flushed, its result is
    the same as alone. The subnormal eps tells the settings apart: flushed, a run
    diverges at its first step; computed, it trains."""
    project.base(max_steps=4, val_check_interval=4)
    settings = {"on": True, "off": False}
    project.defs(
        group("g", *((lb, {**EPS_TINY, "flush_subnormals": f}) for lb, f in settings.items()))
    )
    alone = tmp_path / "alone"
    assert main(project.args("--workers", "1", "--labels", "off", runs=alone)) == 0
    assert main(project.args("--workers", "1", "--labels", "on,off")) == 0
    assert outcome(project.result("g", "off")) == outcome(project.result("g", "off", alone))
    assert project.result("g", "off")["status"] == "completed"
    assert project.result("g", "on")["status"] == "diverged"


def outcome(result: dict) -> tuple:
    """A result's status, steps and metrics (NaN compares equal as text)."""
    return result["status"], result["steps"], repr(result["metrics"])
