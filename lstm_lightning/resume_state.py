"""What an exact resume needs beyond the weights and the optimizer, kept in a checkpoint.

Lightning's checkpoint holds the weights, the optimizer, the LR schedule and the loops'
counters. A run resumed from those alone would not continue as the uninterrupted run
would, so ``save`` adds, and ``restore`` reads back:

- ``steps_per_batch``: K, the unit of the checkpoint's batch counts. A fit that loads it
  recounts them in its own K (``fused.restack_if_fitting``) before Lightning reads them.
- ``tbptt_state``: the LSTM state carried across training batches (``carry_state``), so
  the epoch resumed in the middle of continues from it, not from a zero state.
- ``loss_limit``: the divergence limit fixed at the run's first step
  (``lstm_lightning.divergence``), so a resumed run keeps its rule.
- ``rng``: torch's RNG states (CPU, and every CUDA device's), so dropout draws on where
  it stopped.

``LanguageModel``'s ``on_save_checkpoint`` and ``on_load_checkpoint`` call them.
"""

from __future__ import annotations

import lightning as L
import torch

from lstm_lightning import fused


def save(module: L.LightningModule, checkpoint: dict) -> None:
    """Add to ``checkpoint`` what ``restore`` reads, from a ``LanguageModel``."""
    checkpoint["steps_per_batch"] = fused.steps_per_batch(module.trainer)
    checkpoint["tbptt_state"] = module._state.get("train")
    checkpoint["loss_limit"] = module.loss_limit
    checkpoint["rng"] = rng_states()


def restore(module: L.LightningModule, checkpoint: dict) -> None:
    """Set a ``LanguageModel`` (and torch's RNGs) from what ``save`` added to ``checkpoint``;
    a key it lacks (an older checkpoint) leaves that part as it is."""
    fused.restack_if_fitting(module, checkpoint)
    if checkpoint.get("loss_limit") is not None:
        module.loss_limit = checkpoint["loss_limit"]
    if checkpoint.get("tbptt_state") is not None:
        module._state["train"] = checkpoint["tbptt_state"]
        module._resumed_state = True  # the next on_train_epoch_start keeps the state
    set_rng_states(checkpoint.get("rng", {}))


def rng_states() -> dict[str, object]:
    """torch's RNG states: ``torch`` (CPU), and ``cuda`` (one a device) where there is CUDA."""
    states: dict[str, object] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what ``rng_states`` returned; ``cuda`` only where there is CUDA."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
