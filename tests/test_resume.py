"""Resuming from a checkpoint continues the run exactly: same data, state and randomness."""

from __future__ import annotations

import pytest

from lstm_lightning.cli import main
from tests.test_cli import scalars


@pytest.mark.parametrize("batching", ["windows", "contiguous"])
def test_resume_mid_epoch_equals_an_uninterrupted_run(tiny, tmp_path, batching):
    # 4096 tokens make epochs of 28 batches: stopping at 33 stops inside epoch 1, with
    # dropout on, so the data position, the TBPTT state and the RNG must all come back.
    common = [
        "--data.synthetic_tokens",
        "4096",
        "--data.batching",
        batching,
        "--model.dropout",
        "0.1",
        "--trainer.val_check_interval",
        "40",
        "--trainer.limit_val_batches",
        "null",
    ]

    def fit(name: str, steps: int, *extra: str):
        args = tiny(*common, steps=steps)
        args[args.index("--trainer.val_check_interval") + 1] = "40"
        assert (
            main(
                ["fit", *args, "--trainer.logger.init_args.save_dir", str(tmp_path / name), *extra]
            )
            == 0
        )
        return tmp_path / name / "lstm" / "version_0"

    whole = fit("whole", 40)
    # A checkpoint written mid-run, as a killed or requeued run leaves it (step 30)...
    periodic = fit(
        "periodic", 33, "--checkpoint.save_top_k", "-1", "--checkpoint.every_n_train_steps", "30"
    )
    (mid,) = (periodic / "checkpoints").glob("*step=30.ckpt")
    # ...and one written when a fit stopped at max_steps inside an epoch (step 33).
    for name, ckpt in (
        ("from_batch_end", mid),
        ("from_fit_end", periodic / "checkpoints" / "last.ckpt"),
    ):
        resumed = fit(name, 40, "--ckpt_path", str(ckpt))
        assert scalars(resumed)["val/loss"] == scalars(whole)["val/loss"], name
        assert scalars(resumed)["train/loss"][-1] == scalars(whole)["train/loss"][-1], name
