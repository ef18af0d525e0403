"""Resuming from a checkpoint continues the run exactly: same data, state and randomness."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import lstm_lightning.fused
from lstm_lightning.checkpoints import SafeCheckpointIO
from lstm_lightning.cli import EXIT_CONFIG_ERROR, main
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.fused import restack_progress
from lstm_lightning.module import LanguageModel
from tests.test_cli import scalars

# 4096 tokens make epochs of 28 steps: stopping at 36 stops inside epoch 1, with dropout
# on, so the data position, the TBPTT state and the RNG must all come back. Every count
# of steps (28, 32, 36, 40, the log interval 4) is a multiple of 4 steps a batch.
COMMON = ["--data.synthetic_tokens", "4096", "--model.dropout", "0.1"]
COMMON += ["--trainer.val_check_interval", "40", "--trainer.limit_val_batches", "null"]
COMMON += ["--trainer.log_every_n_steps", "4"]


@pytest.fixture
def fit(tiny, tmp_path):
    def fit(name: str, steps: int, *extra: str):
        args = tiny(*COMMON, steps=steps)
        args[args.index("--trainer.val_check_interval") + 1] = "40"
        save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / name)]
        assert main(["fit", *args, *save_dir, *extra]) == 0
        return tmp_path / name / "lstm" / "version_0"

    return fit


def assert_continues(resumed, whole, name: str) -> None:
    assert scalars(resumed)["val/loss"] == scalars(whole)["val/loss"], name
    assert scalars(resumed)["train/loss"][-1] == scalars(whole)["train/loss"][-1], name


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_batch", ["1", "4"])
@pytest.mark.parametrize("batching", ["windows", "contiguous"])
def test_resume_mid_epoch_equals_an_uninterrupted_run(fit, batching, steps_per_batch):
    k = ["--data.batching", batching, "--data.steps_per_batch", steps_per_batch]
    whole = fit("whole", 40, *k)
    # A checkpoint written mid-run, as a killed or requeued run leaves it (step 32)...
    every = ["--checkpoint.save_top_k", "-1", "--checkpoint.every_n_train_steps", "32"]
    periodic = fit("periodic", 36, *k, *every)
    (mid,) = (periodic / "checkpoints").glob("*step=32.ckpt")
    # ...and one written when a fit stopped at max_steps inside an epoch (step 36).
    for name, ckpt in (
        ("from_batch_end", mid),
        ("from_fit_end", periodic / "checkpoints" / "last.ckpt"),
    ):
        assert_continues(fit(name, 40, *k, "--ckpt_path", str(ckpt)), whole, name)


def as_automatic_optimization(path, out) -> None:
    """The checkpoint as this project wrote it before a batch could hold several steps:
    one step a batch, and the step count where automatic optimization keeps it."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    restack_progress(ckpt, 1)
    del ckpt["steps_per_batch"]
    loop = ckpt["loops"]["fit_loop"]
    manual = "epoch_loop.manual_optimization.optim_step_progress"
    loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"] = loop[manual]
    loop[manual] = {part: {"ready": 0, "completed": 0} for part in ("total", "current")}
    torch.save(ckpt, out)


@pytest.mark.slow
def test_resume_with_another_k_or_from_automatic_optimization(fit, tmp_path):
    whole = fit("whole", 40, "--data.steps_per_batch", "1")
    every = ["--checkpoint.save_top_k", "-1", "--checkpoint.every_n_train_steps", "32"]
    periodic = fit("periodic", 36, "--data.steps_per_batch", "4", *every)
    (mid,) = (periodic / "checkpoints").glob("*step=32.ckpt")
    for k in ("2", "1"):  # written with 4 steps a batch, resumed with 2 and with 1
        resumed = fit(f"k{k}", 40, "--data.steps_per_batch", k, "--ckpt_path", str(mid))
        assert_continues(resumed, whole, f"k{k}")
    legacy = tmp_path / "automatic.ckpt"
    as_automatic_optimization(mid, legacy)
    assert_continues(fit("legacy", 40, "--ckpt_path", str(legacy)), whole, "legacy")  # auto: 4


@pytest.mark.slow
@pytest.mark.parametrize("spans_run", [True, False], ids=["one_epoch", "epochs_of_the_data"])
def test_auto_k_resumes_a_checkpoint_that_stopped_between_its_batches(fit, monkeypatch, spans_run):
    # Written with K = 2, stopped at step 34, where auto would take K = 4 (40 steps, logs
    # every 4): the resumed fit takes a K that divides 34, and continues the run exactly.
    # spans_run False: as code before samplers.RunSampler wrote it, a Lightning epoch per
    # data epoch (28 steps), so the checkpoint is 6 steps into Lightning's epoch 1.
    whole = fit("whole", 40, "--data.steps_per_batch", "1")
    with monkeypatch.context() as patch:
        if not spans_run:
            patch.setattr(lstm_lightning.fused, "spans_run", lambda trainer, data: False)
        stopped = fit("stopped", 34, "--data.steps_per_batch", "2")
    last = stopped / "checkpoints" / "last.ckpt"
    written = torch.load(last, map_location="cpu", weights_only=True)
    into_epoch = {} if spans_run else {"the checkpoint's step into its epoch (--ckpt_path)": 6}
    assert lstm_lightning.fused.resumed_counts(written) == {
        "the checkpoint's step (--ckpt_path)": 34,
        **into_epoch,
    }
    resumed = fit("resumed", 40, "--ckpt_path", str(last))  # steps_per_batch: auto
    assert_continues(resumed, whole, "resumed")
    end = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (end["global_step"], end["steps_per_batch"]) == (40, 2)


# --- checkpoints are data: a planted pickle never runs -------------------------------------


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_planted_checkpoint_is_refused_in_one_line(
    tiny, tmp_path, capsys, command, planted_checkpoint
):
    path, marker = planted_checkpoint
    assert main([command, *tiny(), "--ckpt_path", str(path)]) == EXIT_CONFIG_ERROR
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert errors == [
        f"error: --ckpt_path: {path} holds a Python object (getattr) that a checkpoint never "
        "needs; refused unread (nothing in it ran). Use a checkpoint this project wrote"
    ]
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_lightning_loads_ckpt_path_as_data_whatever_weights_only_says(tmp_path, planted_checkpoint):
    # A Trainer built by hand, asking Lightning for weights_only=False: the model's
    # SafeCheckpoints callback still loads with the weights-only unpickler.
    path, marker = planted_checkpoint
    data = SequenceDataModule(synthetic_tokens=4096, synthetic_states=16, synthetic_vocab=16)
    model = LanguageModel(vocab_size=data.vocab_size, hidden_size=16, base_hidden_size=16)
    trainer = L.Trainer(max_steps=4, logger=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match="holds a Python object"):
        trainer.fit(model, datamodule=data, ckpt_path=path, weights_only=False)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="holds a Python object"):
        SafeCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()
