"""Several optimizer steps per Lightning batch (data.steps_per_batch = K): nothing a user
sees depends on K. Same losses, logged at the same steps, same validations and
checkpoints; settings keep counting optimizer steps; a K that cannot keep them is refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lstm_lightning.module
from lstm_lightning.cli import EXIT_CONFIG_ERROR, EXIT_DIVERGED, main
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.fit import build_cli
from lstm_lightning.fused import (
    StepProgressBar,
    idle_wrappers,
    resolve_steps_per_batch,
    restack_progress,
)
from lstm_lightning.module import LanguageModel

# 24 steps, a validation every 8, a log every 4, a checkpoint every 8: auto picks K = 4.
SETTINGS = ["--trainer.val_check_interval", "8", "--trainer.log_every_n_steps", "4"]
SETTINGS += ["--checkpoint.every_n_train_steps", "8", "--checkpoint.save_top_k", "-1"]


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar as (step, value) pairs: the steps must agree too, not only the values."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def fit(tiny, tmp_path, name: str, *extra: str, steps: int = 24, code: int = 0) -> Path:
    args = tiny(*SETTINGS, *extra, steps=steps)
    args[args.index("--trainer.val_check_interval") + 1] = "8"
    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / name)]
    assert main(["fit", *args, *save_dir]) == code
    return tmp_path / name / "lstm" / "version_0"


def checkpoints(run: Path) -> dict[str, dict]:
    return {
        p.name: torch.load(p, map_location="cpu", weights_only=True)
        for p in sorted((run / "checkpoints").glob("*.ckpt"))
    }


def same(a, b) -> bool:
    """Bitwise equality of nested checkpoint content (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def assert_same_checkpoint(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["epoch"] == b["epoch"]
    loops = [c["loops"]["fit_loop"]["epoch_loop.state_dict"] for c in (a, b)]
    assert loops[0] == loops[1]  # Lightning's logging counter, in steps
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "tbptt_state", "rng"):
        assert same(a[key], b[key]), key


# --- choosing K --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, counts, only_one, expected",
    [
        ("auto", {"trainer.max_steps": 1000, "trainer.log_every_n_steps": 50}, None, 10),
        ("auto", {"trainer.max_steps": 1024, "trainer.log_every_n_steps": 64}, None, 16),
        ("auto", {"trainer.max_steps": 20, "trainer.log_every_n_steps": 4}, None, 4),
        ("auto", {"trainer.max_steps": 1000, "the steps of a training epoch": 460}, None, 10),
        ("auto", {"trainer.max_steps": 997}, None, 1),
        ("auto", {"trainer.max_steps": 1024}, "one process", 1),
        (4, {"trainer.max_steps": 20, "trainer.log_every_n_steps": 4}, None, 4),
        (1, {"trainer.max_steps": 7}, "one process", 1),
    ],
)
def test_resolve_steps_per_batch(requested, counts, only_one, expected):
    assert resolve_steps_per_batch(requested, counts, only_one) == expected


def test_a_k_that_does_not_divide_a_setting_is_refused():
    counts = {"trainer.max_steps": 1000, "trainer.log_every_n_steps": 50}
    with pytest.raises(ConfigError, match="steps_per_batch=4 must divide trainer.max_steps"):
        resolve_steps_per_batch(4, {"trainer.max_steps": 1002})
    with pytest.raises(ConfigError, match="=8 must divide trainer.log_every_n_steps=50"):
        resolve_steps_per_batch(8, counts)
    with pytest.raises(ConfigError, match="steps_per_batch=2 needs one process"):
        resolve_steps_per_batch(2, counts, "one process")


def test_bad_k_gets_one_line_and_exit_2(tiny, tmp_path, capsys):
    assert main(["fit", *tiny("--data.steps_per_batch", "8", steps=20)]) == EXIT_CONFIG_ERROR
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert errors == [
        "error: data.steps_per_batch=8 must divide trainer.max_steps=20 (a Lightning batch "
        "holds 8 optimizer steps); use a divisor of 20 or data.steps_per_batch: auto"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_cli_translates_batch_counted_settings(tiny):
    cli = build_cli(
        tiny(
            "--trainer.limit_train_batches",
            "40",
            "--trainer.log_every_n_steps",
            "8",
            "--checkpoint.every_n_train_steps",
            "16",
            "--trainer.gradient_clip_val",
            "0.5",
            steps=32,
        ),
        run=False,
    )
    assert cli.datamodule.steps_per_batch == 8  # auto: 32, 32, 8, 16 and the epoch of 40
    assert cli.trainer.val_check_interval == 4  # 32 steps = 4 batches of 8
    assert cli.trainer.limit_train_batches == 5
    assert cli.trainer.log_every_n_steps == 8  # counted in steps by the model: unchanged
    assert cli.trainer.max_steps == 32
    assert (cli.model.gradient_clip_val, cli.trainer.gradient_clip_val) == (0.5, None)


def test_ddp_takes_one_step_a_batch(tiny):
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.logger", "false"]
    cli = build_cli(tiny(*ddp, steps=16), run=False)  # builds, launches nothing
    assert cli.trainer.world_size == 2
    assert cli.datamodule.steps_per_batch == 1
    with pytest.raises(ConfigError, match="steps_per_batch=4 needs one process: under DDP"):
        build_cli(tiny(*ddp, "--data.steps_per_batch", "4", steps=16), run=False)


def test_accumulating_gradients_is_refused(tiny):
    with pytest.raises(ConfigError, match="accumulate_grad_batches is not supported"):
        build_cli(tiny("--trainer.accumulate_grad_batches", "2"), run=False)


def test_the_progress_bar_counts_steps_and_redraws_at_most_twice_a_second(monkeypatch):
    # 10 steps a batch, 0.1 s a batch: a multiple of 20 steps every 0.2 s, a redraw every
    # 0.6 s (the first multiple 0.5 s after the last redraw), and one at the epoch's end.
    bar = StepProgressBar(refresh_rate=20)
    bar.steps_per_batch = 10
    drawn = []
    bar.train_progress_bar = SimpleNamespace(n=0, total=460)
    bar.train_progress_bar.set_postfix = lambda metrics: drawn.append(bar.train_progress_bar.n)
    monkeypatch.setattr(bar, "get_metrics", lambda trainer, module: {})
    for batch_idx in range(46):
        bar.clock = lambda seconds=(batch_idx + 1) / 10: seconds
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert drawn == [20, 80, 140, 200, 260, 320, 380, 440, 460]


# --- same results for every K --------------------------------------------------------------


@pytest.mark.parametrize("batching", ["windows", "contiguous"])
def test_results_are_bitwise_the_same_for_every_k(tiny, tmp_path, batching):
    # Dropout and clipping on: the RNG stream and the clipped gradients must match too.
    common = ["--data.batching", batching, "--model.dropout", "0.1"]
    common += ["--trainer.gradient_clip_val", "0.05"]
    one = fit(tiny, tmp_path, "k1", *common, "--data.steps_per_batch", "1")
    four = fit(tiny, tmp_path, "k4", *common)  # auto: K = 4
    assert curves(one) == curves(four)
    assert [s for s, _ in curves(four)["val/loss"]] == [7, 15, 23]  # Lightning's step - 1
    assert len(curves(four)["train/loss"]) == 6  # every 4 of 24 steps
    ckpts_one, ckpts_four = checkpoints(one), checkpoints(four)
    assert list(ckpts_one) == list(ckpts_four)  # step=8, step=16, step=24, last
    assert [c["steps_per_batch"] for c in ckpts_four.values()] == [4] * 4
    for name in ckpts_one:
        assert_same_checkpoint(ckpts_one[name], ckpts_four[name])


def test_a_step_count_that_16_does_not_divide(tiny, tmp_path):
    # 20 steps: auto takes K = 4 (20 and the log interval 4), not 16; the run ends at 20.
    one = fit(tiny, tmp_path, "k1", "--data.steps_per_batch", "1", steps=20)
    auto = fit(tiny, tmp_path, "auto", steps=20)
    assert curves(one) == curves(auto)
    assert [step for step, _ in curves(auto)["train/loss"]] == [3, 7, 11, 15, 19]


def test_a_run_across_epochs_takes_k_that_does_not_divide_an_epoch(tiny, tmp_path):
    # 4096 tokens: epochs of 28 steps. 40 steps, logs every 8: auto takes K = 8 (the run is
    # one Lightning epoch, samplers.RunSampler), not the 4 that 28 allows, with K = 1's losses.
    extra = ["--data.synthetic_tokens", "4096", "--model.dropout", "0.1"]
    extra += ["--trainer.log_every_n_steps", "8"]
    one = fit(tiny, tmp_path, "k1", *extra, "--data.steps_per_batch", "1", steps=40)
    auto = fit(tiny, tmp_path, "auto", *extra, steps=40)
    assert curves(one) == curves(auto)
    assert [c["steps_per_batch"] for c in checkpoints(auto).values()] == [8] * 6
    for name, ckpt in checkpoints(one).items():
        assert_same_checkpoint(ckpt, checkpoints(auto)[name])


def test_epochs_that_count_keep_k_a_divisor_of_an_epoch(tiny):
    # Validating by epochs (check_val_every_n_epoch) needs batches that end with the epoch.
    data = ["--data.synthetic_tokens", "4096", "--trainer.log_every_n_steps", "8"]
    spans = build_cli(tiny(*data, steps=40), run=False).datamodule
    assert (spans.run_steps, spans.steps_per_batch) == (40, 8)
    by_epoch = tiny(*data, steps=40)
    by_epoch[by_epoch.index("--trainer.check_val_every_n_epoch") + 1] = "1"
    by_epoch[by_epoch.index("--trainer.val_check_interval") + 1] = "1.0"
    epochs = build_cli(by_epoch, run=False).datamodule
    assert (epochs.run_steps, epochs.steps_per_batch) == (None, 4)


def test_lightning_wrappers_and_direct_steps_agree(tiny, tmp_path, monkeypatch):
    # Where Lightning's backward and step wrappers would only call idle hooks, a step calls
    # torch directly (idle_wrappers); forcing the wrappers must change nothing.
    cli = build_cli(tiny(), run=False)
    cli.trainer.strategy.connect(cli.model)
    assert idle_wrappers(cli.trainer, cli.model)
    direct = fit(tiny, tmp_path, "direct", "--trainer.gradient_clip_val", "0.05")
    monkeypatch.setattr(lstm_lightning.module, "idle_wrappers", lambda trainer, module: False)
    wrapped = fit(tiny, tmp_path, "wrapped", "--trainer.gradient_clip_val", "0.05")
    assert curves(direct) == curves(wrapped)
    for a, b in zip(checkpoints(direct).values(), checkpoints(wrapped).values()):
        assert_same_checkpoint(a, b)


def test_a_nan_in_the_middle_of_a_batch_stops_at_its_step(tiny, tmp_path, monkeypatch, capsys):
    # Step 6 is the third of the second batch of 4: the run stops there, having taken 6
    # steps, whatever K is.
    model_step = LanguageModel.model_step

    def poisoned(self, batch, split):
        loss, logits = model_step(self, batch, split)
        if split == "train" and self.trainer.global_step == 6:
            loss = loss * float("nan")
        return loss, logits

    monkeypatch.setattr(LanguageModel, "model_step", poisoned)
    for k in ("1", "4"):
        run = fit(tiny, tmp_path, f"k{k}", "--data.steps_per_batch", k, code=EXIT_DIVERGED)
        lines = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
        assert len(lines) == 1 and "at step 6;" in lines[0], lines
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 6  # the poisoned step was skipped
        assert curves(run)["hp/diverged_at_step"] == [(0, 6.0)]
        assert all(torch.isfinite(w).all() for w in last["state_dict"].values())


class Probe(L.Callback):
    """What a fit's training sees: K, the translated settings, the shape of a batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            data = trainer.datamodule
            self.seen = (data.steps_per_batch, trainer.val_check_interval, tuple(batch.shape))


def fit_by_hand(tmp_path, name: str, steps_per_batch) -> tuple[Path, L.Trainer, Probe]:
    """A fit as a notebook writes it: a Trainer, a model and a data module, no CLI."""
    L.seed_everything(0)
    data = SequenceDataModule(
        synthetic_tokens=32768, synthetic_states=16, synthetic_vocab=16, seq_len=16,
        batch_size=8, steps_per_batch=steps_per_batch,
    )  # fmt: skip
    model = LanguageModel(vocab_size=data.vocab_size, hidden_size=16, base_hidden_size=16)
    probe = Probe()
    trainer = L.Trainer(
        max_steps=24, val_check_interval=8, check_val_every_n_epoch=None, limit_val_batches=4,
        log_every_n_steps=4, num_sanity_val_steps=0, enable_model_summary=False,
        logger=TensorBoardLogger(tmp_path / name, name="lstm"), callbacks=[probe],
        default_root_dir=tmp_path / name,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return tmp_path / name / "lstm" / "version_0", trainer, probe


def test_a_trainer_built_by_hand_gets_fused_steps(tmp_path):
    one, _, probe_one = fit_by_hand(tmp_path, "k1", 1)
    auto, trainer, probe = fit_by_hand(tmp_path, "auto", "auto")
    assert probe_one.seen == (1, 8, (1, 8, 17))
    assert probe.seen == (4, 2, (4, 8, 17))  # K = 4: a validation every 2 batches of 4 steps
    assert curves(one) == curves(auto)
    assert [s for s, _ in curves(auto)["val/loss"]] == [7, 15, 23]
    assert trainer.global_step == 24
    assert trainer.val_check_interval == 8  # given back as the user set it
    assert isinstance(trainer.progress_bar_callback, StepProgressBar)
    assert trainer.progress_bar_callback.steps_per_batch == 4


# --- checkpoints across K -----------------------------------------------------------------


def progress(total: tuple[int, int], current: tuple[int, int]) -> dict:
    """Lightning's batch progress as a checkpoint holds it: (completed, processed) counts."""
    return {
        part: {"ready": p, "started": p, "processed": p, "completed": c}
        for part, (c, p) in (("total", total), ("current", current))
    }


def test_restack_progress_converts_batch_counts():
    # Written with K = 4 at the end of batch 8 (32 steps; "completed" counts it only after
    # the batch-end hooks), 1 batch (4 steps) into epoch 1.
    ckpt = {"steps_per_batch": 4, "loops": {"fit_loop": {}}}
    ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"] = progress((7, 8), (0, 1))
    restack_progress(ckpt, 2)
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"] == progress((15, 16), (1, 2))
    with pytest.raises(
        ConfigError,
        match="stopped 4 steps into its epoch, not a multiple of data.steps_per_batch=8",
    ):
        restack_progress(ckpt, 8)


def test_restack_progress_reads_a_checkpoint_of_automatic_optimization():
    steps = {"total": {"ready": 30, "completed": 30}, "current": {"ready": 2, "completed": 2}}
    loop = {"epoch_loop.batch_progress": progress((29, 30), (1, 2))}
    loop["epoch_loop.automatic_optimization.optim_progress"] = {"optimizer": {"step": steps}}
    ckpt = {"loops": {"fit_loop": loop}}  # no steps_per_batch: written before them
    restack_progress(ckpt, 1)
    assert loop["epoch_loop.manual_optimization.optim_step_progress"] == steps  # global_step
    assert loop["epoch_loop.batch_progress"] == progress((29, 30), (1, 2))
