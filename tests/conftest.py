"""Shared fixtures: tiny, CPU-only, seeded runs whose output goes to tmp_path."""

from __future__ import annotations

import os

import pytest
import torch

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


# --- core ---


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for any planted code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


@pytest.fixture
def planted_checkpoint(tmp_path):
    """(a .ckpt whose pickle would create ``marker`` if unpickled unsafely, marker)."""
    path, marker = tmp_path / "planted.ckpt", tmp_path / "code_ran"
    torch.save({"state_dict": {}, "global_step": 0, "payload": _Payload(marker)}, path)
    return path, marker
