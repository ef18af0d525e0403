"""Shared fixtures: tiny, CPU-only, seeded runs whose output goes to tmp_path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# One thread: the suite runs beside other work on 2 cores, where OpenMP spinning on a
# busy core makes multi-threaded steps orders of magnitude slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_args(tmp_path, *extra: str, steps: int = 4) -> list[str]:
    """Flags for a run that takes seconds: width 16, 32k synthetic tokens, no bar."""
    return [
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--model.hidden_size",
        "16",
        "--model.base_hidden_size",
        "16",
        "--data.synthetic_tokens",
        "32768",
        "--data.synthetic_states",
        "16",
        "--data.synthetic_vocab",
        "16",
        "--data.seq_len",
        "16",
        "--data.batch_size",
        "8",
        *extra,
    ]


@pytest.fixture
def tiny(tmp_path):
    """``tiny(*extra, steps=4)``: CLI flags for a tiny run writing under tmp_path."""
    return lambda *extra, steps=4: tiny_args(tmp_path, *extra, steps=steps)


# --- entry ---


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """{tag: values} of every scalar TensorBoard holds for ``run_dir``, in step order."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class SignalAt(Callback):
    """Sends this process ``signum`` once, at the end of the batch reaching ``step``: a
    user's Ctrl-C or a scheduler's SIGTERM, at a known step (``--trainer.callbacks``)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def signal_at(step: int, signum: int) -> list[str]:
    """Flags adding ``SignalAt(step, signum)`` to a run's callbacks."""
    callback = {"class_path": "tests.conftest.SignalAt", "init_args": {"step": step}}
    callback["init_args"]["signum"] = int(signum)
    return ["--trainer.callbacks", json.dumps([callback])]
