"""The LightningModule: schedules keep muP ratios, TBPTT carries state exactly, runs learn."""

from __future__ import annotations

import pytest
import torch

from lstm_lightning.cli import main
from lstm_lightning.errors import ConfigError
from lstm_lightning.module import LanguageModel, make_optimizer
from lstm_lightning.schedule import lr_factor
from tests.test_cli import scalars


@pytest.mark.parametrize(
    "schedule, step, expected",
    [
        ("constant", 0, 0.25),  # warm-up: (step + 1) / 4
        ("constant", 3, 1.0),
        ("constant", 99, 1.0),
        ("cosine", 4, 1.0),  # decay starts after warm-up
        ("cosine", 52, 0.5),  # halfway through 96 decay steps
        ("cosine", 100, 0.0),
        ("linear", 28, 0.75),
        ("linear", 100, 0.0),
    ],
)
def test_lr_factor(schedule, step, expected):
    assert lr_factor(step, schedule, warmup_steps=4, total_steps=100) == pytest.approx(expected)


def with_optimizers(model: LanguageModel, total_steps: int = 100):
    return make_optimizer(model.hparams, model.net, model.shapes, total_steps)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_schedule_keeps_the_mup_ratios_between_groups(optimizer):
    model = LanguageModel(
        vocab_size=16,
        hidden_size=128,
        base_hidden_size=32,
        optimizer=optimizer,
        schedule="cosine",
        warmup_steps=5,
    )
    opt, scheduler = with_optimizers(model)
    initial = [g["initial_lr"] for g in opt.param_groups]  # before the schedule
    assert len(set(initial)) > 1  # muP at m=4 gives groups different learning rates
    for step in range(30):
        opt.step()
        scheduler.step()
        factor = lr_factor(step + 1, "cosine", 5, 100)
        for group, lr0 in zip(opt.param_groups, initial):
            assert group["lr"] == pytest.approx(lr0 * factor, rel=1e-12)


@pytest.mark.parametrize("total_steps", [None, float("inf")])
def test_an_unbounded_run_allows_only_a_constant_schedule(total_steps):
    constant = LanguageModel(vocab_size=16, hidden_size=16, warmup_steps=2)
    _, scheduler = with_optimizers(constant, total_steps)
    assert [scheduler.lr_lambdas[0](s) for s in (0, 1, 10**9)] == [0.5, 1.0, 1.0]
    cosine = LanguageModel(vocab_size=16, hidden_size=16, schedule="cosine")
    with pytest.raises(ConfigError, match="model.schedule: cosine needs a finite run"):
        with_optimizers(cosine, total_steps)


def test_carried_state_equals_one_long_sequence():
    # TBPTT: two chunks with the state carried give the logits of one forward pass over
    # both, so contiguous batching loses no context at chunk edges.
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=16, hidden_size=24, num_layers=2, carry_state=True)
    tokens = torch.randint(0, 16, (3, 2 * 8 + 1))  # (B, 2T+1)
    first, second = tokens[:, :9], tokens[:, 8:]  # chunk 2 starts where chunk 1 ended
    model.model_step(first, "train")
    _, carried = model.model_step(second, "train")
    full, _ = model.net(tokens[:, :-1])  # (B, 2T, V)
    torch.testing.assert_close(carried, full[:, 8:], rtol=1e-5, atol=1e-6)
    model.on_train_epoch_start()  # a new epoch starts from a zero state
    _, fresh = model.model_step(second, "train")
    torch.testing.assert_close(fresh, model.net(second[:, :-1])[0])


def test_impossible_values_name_the_key():
    with pytest.raises(ValueError, match="model.dropout must be in \\[0, 1\\), got 1.5"):
        LanguageModel(vocab_size=8, dropout=1.5)
    with pytest.raises(ValueError, match="model.betas must lie in \\[0, 1\\)"):
        LanguageModel(vocab_size=8, betas=(0.9, 1.0))


def final_val_loss(tmp_path, *args: str) -> tuple[float, float]:
    assert (
        main(
            [
                "fit",
                "--config",
                "configs/lstm.yaml",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                *args,
            ]
        )
        == 0
    )
    runs = sorted(tmp_path.glob("lstm/version_*"), key=lambda p: int(p.name.split("_")[1]))
    metrics = scalars(runs[-1])
    return metrics["val/loss"][-1], metrics["val/loss_floor"][-1]


@pytest.mark.slow
def test_wider_is_better_on_the_synthetic_default(tmp_path):
    # The embedded language must reward width, or a width study on it shows nothing.
    losses = [
        final_val_loss(
            tmp_path,
            "--model.hidden_size",
            str(h),
            "--trainer.max_steps",
            "300",
            "--trainer.val_check_interval",
            "300",
        )[0]
        for h in (16, 64, 256)
    ]
    assert losses[0] > losses[1] > losses[2], losses


@pytest.mark.slow
def test_default_config_gets_close_to_the_floor(tmp_path):
    from lstm_lightning.synthetic import make_hmm

    loss, floor = final_val_loss(tmp_path)
    unigram = make_hmm(128, 64, 2, 4, seed=0).unigram_entropy()  # the data defaults
    assert loss < unigram - 2.0  # far below what a model without context reaches
    assert loss - floor < 0.12, (loss, floor)  # measured: 1.68 vs 1.60
