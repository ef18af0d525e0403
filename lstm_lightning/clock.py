"""A run's compute over all its attempts: core-seconds carried in its checkpoints.

A run stopped (Ctrl-C, SIGTERM, a SLURM preemption, a killed worker, a study driver that
was interrupted) resumes from its newest checkpoint, and the steps before that checkpoint
were paid for by an earlier attempt. ``result.json``'s ``core_seconds`` counts them too,
so that a study's compute table does not shrink because it was resumed.

``ComputeClock`` is a stateful callback: every checkpoint stores the core-seconds spent
up to its save (earlier attempts' plus this one's, wall time x torch threads x
processes), and a resume reads them back (``earlier``). Time an attempt spent after its
last checkpoint bought steps that are trained again, and is not counted: the total is
what the run's result stands on, each step once.
"""

from __future__ import annotations

import time

import lightning as L
import torch


class ComputeClock(L.Callback):
    """Core-seconds of a fit, earlier attempts included (see the module doc).
    ``LanguageModel.configure_callbacks`` adds it to any Trainer."""

    def __init__(self) -> None:
        self.earlier = 0.0  # core-seconds of the attempts before this one (from a checkpoint)
        self._start: float | None = None
        self._processes = 1

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._processes = trainer.world_size

    def this_attempt(self) -> float:
        """Core-seconds since this attempt's fit started (0 before it has)."""
        if self._start is None:
            return 0.0
        return (time.perf_counter() - self._start) * torch.get_num_threads() * self._processes

    def state_dict(self) -> dict[str, float]:
        return {"core_seconds": self.earlier + self.this_attempt()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier = float(state_dict.get("core_seconds", 0.0))


def earlier_core_seconds(trainer) -> float:
    """The core-seconds a resumed fit's earlier attempts spent (0 for a fresh one)."""
    clocks = [c for c in trainer.callbacks if isinstance(c, ComputeClock)]
    return clocks[0].earlier if clocks else 0.0
