"""Samplers: which window starts a batch reads, epoch by epoch, rank by rank.

A sampler yields window start offsets into a 1-D token stream (``data.TokenWindows``
gathers a batch of them at once). ``window_starts`` gives the starts of independent
windows at a phase, ``row_chunk_starts`` those of ``contiguous`` rows, chunk-major.

``EpochSampler`` yields one epoch's starts, a pure function of (seed, epoch). Under DDP,
rank r takes every W-th start: the union of the ranks' batch i is exactly the
single-process batch i, and in ``contiguous`` mode every rank keeps the same rows from
batch to batch. ``RunSampler`` chains the data epochs of a run that is one Lightning
epoch (``data.SequenceDataModule.run_steps``). Both resume where the run stopped, from
the trainer's progress, and both subclass DistributedSampler only so that Lightning sees
they are already sharded and does not wrap them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DistributedSampler


def window_starts(n: int, seq_len: int, phase: int = 0, shifting: bool = False) -> np.ndarray:
    """Starts ``phase + k * seq_len`` of windows of seq_len + 1 tokens in a stream of n.

    With ``shifting`` the count is the one that fits for every phase in [0, seq_len), so
    a training epoch has the same length whatever phase it draws.
    """
    count = (n - seq_len) // seq_len if shifting else (n - 1 - phase) // seq_len
    return phase + seq_len * np.arange(max(count, 0))


def row_chunk_starts(n: int, seq_len: int, rows: int) -> np.ndarray:
    """Contiguous batching: cut ``n`` tokens into ``rows`` rows; chunk-major order.

    Returns (chunks * rows,) starts: batch i is starts[i*rows:(i+1)*rows], row j's
    chunk i starts at j * row_len + i * seq_len.
    """
    row_len = n // rows
    chunks = (row_len - 1) // seq_len
    i, j = np.meshgrid(np.arange(chunks), np.arange(rows), indexing="ij")
    return (j * row_len + i * seq_len).reshape(-1)


class EpochSampler(DistributedSampler):
    """Yields this rank's window starts for one epoch, a pure function of (seed, epoch).

    ``starts_fn(phase)`` gives the starts at a phase. With ``shuffle`` every epoch draws a
    phase in [0, num_phases) and a permutation (``windows`` training); otherwise the
    starts at phase 0 come in order. ``position_fn`` gives (epoch, items already taken
    this epoch) from the trainer's progress, so a resumed run draws the same order and
    continues where it stopped.

    Rank r of W takes positions r, r+W, ... of the epoch's order, so the union of the
    ranks' batch i is the single-process batch i, and in contiguous mode a rank keeps
    its rows. It subclasses DistributedSampler only so that Lightning sees it is
    already sharded and does not wrap it (Lightning's wrapper would reshuffle it).
    """

    def __init__(
        self,
        starts_fn: Callable[[int], np.ndarray],
        num_phases: int,
        shuffle: bool,
        seed: int,
        position_fn: Callable[[], tuple[int, int]] = lambda: (0, 0),
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = True,
    ):
        # No super().__init__: it would ask torch.distributed for the rank and world size.
        self.starts_fn, self.num_phases, self.shuffle, self.seed = (
            starts_fn,
            num_phases,
            shuffle,
            seed,
        )
        self.position_fn, self.rank, self.num_replicas = position_fn, rank, world_size
        total = len(starts_fn(0))
        # Training shards must be equal (every rank steps together); eval takes all.
        self.length = total // world_size if equal_shards else len(range(rank, total, world_size))

    def __len__(self) -> int:
        return self.length

    def order(self, epoch: int) -> np.ndarray:
        """All ranks' starts for ``epoch``, in order."""
        if not self.shuffle:
            return self.starts_fn(0)
        rng = np.random.default_rng([self.seed, epoch])
        starts = self.starts_fn(int(rng.integers(self.num_phases)))
        return starts[rng.permutation(len(starts))]

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self.position_fn()
        mine = self.order(epoch)[self.rank :: self.num_replicas][: self.length]
        # A run resumed mid-epoch continues where it stopped instead of replaying the
        # epoch's first batches: skip is the number of items this rank already took.
        return iter(mine[skip:].tolist())

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this; the epoch is read from the trainer instead."""


class RunSampler(DistributedSampler):
    """A whole run's training starts as one Lightning epoch (one process): the data epochs
    of ``epochs`` back to back, each cut to its whole batches (``epoch_items``, as a loader
    of one batch a step drops a partial last one), ``run_items`` in all. K = 1's order, but
    K need not divide an epoch's steps. ``done_fn``: the items the run already took (from
    the trainer's progress), so a resumed run continues where it stopped. A
    DistributedSampler only so that Lightning does not wrap it (as ``EpochSampler``)."""

    def __init__(self, epochs: EpochSampler, epoch_items: int, run_items: int, done_fn):
        self.epochs, self.epoch_items, self.run_items = epochs, epoch_items, run_items
        self.done_fn, self.rank, self.num_replicas = done_fn, 0, 1

    def __len__(self) -> int:
        return self.run_items

    def __iter__(self) -> Iterator[int]:
        done = self.done_fn()
        epoch, skip = divmod(done, self.epoch_items)
        left = self.run_items - done
        while left > 0:
            starts = self.epochs.order(epoch)[skip : self.epoch_items][:left]
            yield from starts.tolist()
            left, epoch, skip = left - len(starts), epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this; the data epoch is read from the trainer's progress."""
