"""The LightningModule: schedules keep muP ratios, TBPTT carries state exactly, runs learn."""

from __future__ import annotations

import math

import pytest
import torch

from lstm_lightning import divergence
from lstm_lightning.cli import EXIT_CONFIG_ERROR, EXIT_DIVERGED, main
from lstm_lightning.errors import ConfigError
from lstm_lightning.fit import build_cli
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


RANGES = [  # argument, a value outside its range type, as the CLI takes it, the one line
    ("hidden_size", 0, "0", "model.hidden_size must be a positive integer, got 0"),
    ("embedding_size", 0, "0", "model.embedding_size must be a positive integer or null, got 0"),
    ("dropout", 1.0, "1.0", "model.dropout must be in [0, 1), got 1.0"),
    ("learning_rate", -0.5, "-0.5", "model.learning_rate must be >= 0, got -0.5"),
    ("eps", 0.0, "0.0", "model.eps must be > 0, got 0.0"),
    ("warmup_steps", -1, "-1", "model.warmup_steps must be >= 0, got -1"),
]


@pytest.mark.parametrize("name, value, flag, line", RANGES, ids=[r[0] for r in RANGES])
def test_range_types_refuse_the_same_way_in_python_and_on_the_command_line(
    tiny, capsys, name, value, flag, line
):
    with pytest.raises(ConfigError) as refused:
        LanguageModel(vocab_size=8, **{name: value})
    assert str(refused.value) == line
    assert main(["fit", *tiny(f"--model.{name}", flag)]) == EXIT_CONFIG_ERROR
    assert [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln] == [
        f"error: {line}"
    ]


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


# --- divergence: the rule, the stop, the hint ---------------------------------------------


@pytest.mark.parametrize(
    "first, vocab, loss, diverged",
    [
        (2.0, 16, 5.5, False),  # limit 2 * ln 16 = 5.55: twice a uniform guess
        (2.0, 16, 5.6, True),
        (12.0, 16, 23.9, False),  # an odd start (first loss 12) moves the limit to 24
        (12.0, 16, 24.1, True),
        (90.0, 16, 100.5, True),  # never above 100 nats
        (float("nan"), 16, 5.5, False),  # a non-finite first loss counts as 0
        (2.0, 16, float("nan"), True),
        (2.0, 16, float("inf"), True),
        (2.0, 16, 2e6, True),
    ],
)
def test_divergence_rule(first, vocab, loss, diverged):
    assert divergence.diverged(loss, divergence.loss_limit(first, vocab)) is diverged


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_an_exploding_loss_stops_the_run_as_diverged(tiny, capsys, optimizer):
    # lr 1e6: the first update sends the loss to ~1e3 (SGD) or ~1e5 (Adam), finite.
    flags = ["--model.optimizer", optimizer, "--model.learning_rate", "1e6"]
    cli = build_cli(["fit", *tiny(*flags, steps=8)])
    assert cli.model.diverged_at_step == 1 and cli.trainer.global_step == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
    assert len(lines) == 1 and "at step 1;" in lines[0] and "model.learning_rate" in lines[0]
    assert main(["fit", *tiny(*flags, steps=8)]) == EXIT_DIVERGED


def test_a_resumed_run_keeps_its_divergence_limit():
    model = LanguageModel(vocab_size=16, hidden_size=16)
    model.on_load_checkpoint({"loss_limit": 7.5})
    assert model.loss_limit == 7.5


@pytest.mark.parametrize(
    "overrides, step, names, not_named",
    [
        ({}, 5, ["lower model.learning_rate, add warm-up"], []),
        ({"output_mult": 8.0}, 5, ["model.learning_rate or model.output_mult (now 8)"], []),
        ({"init_std": 1e38}, 0, ["before any update: lower model.init_std"], ["learning_rate"]),
        ({}, 0, ["model.output_mult or model.embedding_mult"], ["learning_rate"]),
    ],
)
def test_the_divergence_hint_names_what_is_plausible(overrides, step, names, not_named):
    hint = divergence.hint(LanguageModel(vocab_size=16, **overrides).hparams, step)
    assert all(n in hint for n in names) and not any(n in hint for n in not_named), hint


def test_a_nan_from_output_mult_does_not_blame_the_learning_rate(tiny, capsys):
    assert main(["fit", *tiny("--model.output_mult", "1e30")]) == EXIT_DIVERGED
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
    assert "at step 0;" in line and "lower model.output_mult (now 1e+30)" in line
    assert "learning_rate" not in line


def test_validation_logs_each_metric_once_and_it_covers_every_batch(tiny, monkeypatch):
    # self.log costs ~1 ms a call: a metric object is logged on an epoch's first batch only;
    # Lightning computes it at the epoch's end from the updates of all its batches.
    cli = build_cli(tiny(), run=False)
    calls = []
    log = LanguageModel.log
    monkeypatch.setattr(
        LanguageModel,
        "log",
        lambda self, name, *a, **kw: calls.append(name) or log(self, name, *a, **kw),
    )
    (metrics,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert calls.count("val/loss") == calls.count("val/ppl") == 1
    model, losses = cli.model.eval(), []
    with torch.no_grad():
        for i, batch in enumerate(cli.datamodule.val_dataloader()):
            if i < cli.trainer.limit_val_batches:  # 4 batches of the same size
                losses.append(model.model_step(batch, "check")[0])
    assert len(losses) == 4
    assert metrics["val/loss"] == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
