"""A run's compute counts its earlier attempts: core-seconds carried in checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lstm_lightning import checkpoints, clock, execute
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.module import LanguageModel


def fit(tmp_path, steps: int, ckpt_path=None) -> L.Trainer:
    """A tiny fit built by hand (no CLI), from ``ckpt_path`` when given."""
    L.seed_everything(0)
    data = SequenceDataModule(
        synthetic_tokens=32768, synthetic_states=16, synthetic_vocab=16, seq_len=16,
        batch_size=8,
    )  # fmt: skip
    model = LanguageModel(vocab_size=data.vocab_size, hidden_size=16, base_hidden_size=16)
    trainer = L.Trainer(
        max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_a_checkpoint_carries_the_compute_and_a_resume_reads_it_back(tmp_path):
    first = fit(tmp_path, 8)
    spent = next(c for c in first.callbacks if isinstance(c, clock.ComputeClock))
    assert spent.earlier == 0.0 and spent.this_attempt() > 0  # a fresh run: this attempt only
    path = tmp_path / "at8.ckpt"
    first.save_checkpoint(path)
    saved = checkpoints.load(path, what="test")["callbacks"]["ComputeClock"]["core_seconds"]
    assert saved >= spent.this_attempt() * 0.5 > 0
    resumed = fit(tmp_path, 16, ckpt_path=path)
    assert resumed.global_step == 16
    assert clock.earlier_core_seconds(resumed) == pytest.approx(saved)


def test_a_result_adds_the_earlier_attempts_to_this_one():
    threads = torch.get_num_threads()
    assert execute.compute(2.0)["core_seconds"] == pytest.approx(2.0 * threads)
    assert execute.compute(2.0, 2, earlier=5.0)["core_seconds"] == pytest.approx(
        5.0 + 4.0 * threads
    )
