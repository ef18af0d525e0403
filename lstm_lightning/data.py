"""The DataModule that batches token streams: windows, loaders, stacks of K, floors.

A source (``corpus``) gives three contiguous 1-D token streams (train, val, test). A
batch is a (B_local, seq_len + 1) int64 tensor of windows; the model reads [:, :-1] and
predicts [:, 1:]. Two batchings:

- ``windows``: independent windows. Each training epoch draws a random phase in
  [0, seq_len) and shuffles the windows at that phase, so every token is seen once an
  epoch with window edges that move. Validation uses fixed windows with stride seq_len.
- ``contiguous``: the stream is cut into ``batch_size`` rows and batch i is chunk i of
  every row, so the LSTM state can be carried across batches (TBPTT).

A sampler (``lstm_lightning.samplers``) yields window start offsets, this rank's share
under DDP; the dataset gathers a whole batch with one fancy-index (``__getitems__``), so
there is no per-window Python work.

The training loader yields K = ``steps_per_batch`` consecutive batches at once, a
(K, B_local, seq_len + 1) stack on which the model takes K optimizer steps: Lightning's
fixed cost per batch (hooks, closures, transfer) is paid once per K steps. Batch i of the
stream is sub-batch i % K of stack i // K, so the arithmetic does not depend on K. Every
setting counted in steps (max_steps, the validation, logging and checkpoint intervals)
must be a multiple of K; ``resolve_steps_per_batch`` picks K. A run that crosses the end
of a data epoch is one Lightning epoch where no setting counts epochs (``samplers.RunSampler``:
its batches of K steps may straddle two data epochs, in the order K = 1 takes them);
elsewhere a Lightning epoch is a data epoch and K must divide its steps too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lstm_lightning import ranges, synthetic
from lstm_lightning.corpus import SYNTHETIC_CHAIN_LEN, Corpus, Source, load_corpus
from lstm_lightning.errors import check
from lstm_lightning.fused import stack_steps
from lstm_lightning.ranges import NonNegativeInt, OpenUnitInterval, PositiveInt
from lstm_lightning.samplers import EpochSampler, RunSampler, row_chunk_starts, window_starts

Batching = Literal["windows", "contiguous"]


class TokenWindows(Dataset):
    """Item ``s`` is ``stream[s : s + seq_len + 1]``; ``__getitems__`` gathers many at once."""

    def __init__(self, stream: np.ndarray | torch.Tensor, seq_len: int):
        self.stream = stream
        self.offsets = np.arange(seq_len + 1)  # (T+1,)

    def __len__(self) -> int:
        return len(self.stream)

    def __getitems__(self, starts: list[int]) -> torch.Tensor:
        index = np.asarray(starts)[:, None] + self.offsets  # (B, T+1)
        if isinstance(self.stream, torch.Tensor):
            return self.stream[torch.from_numpy(index)]
        # A memory-mapped array: only the touched pages are read.
        return torch.from_numpy(self.stream[index].astype(np.int64))

    def __getitem__(self, start: int) -> torch.Tensor:
        return self.__getitems__([start])[0]


def stack_batch(batch: torch.Tensor) -> torch.Tensor:
    """Collate for ``TokenWindows``: ``__getitems__`` already returns the stacked batch."""
    return batch


class SequenceDataModule(L.LightningDataModule):
    """Token sequences for language modelling, from an embedded synthetic process or a file.

    Args:
        source: ``synthetic`` (embedded random HMM, no files), ``text`` (a UTF-8 file,
            character-level) or ``tokens`` (a ``.npy`` or raw binary file of token ids).
        path: The file for ``text`` and ``tokens``.
        vocab_size: For ``tokens``: the vocabulary size (default: largest id + 1, up to
            2**24). Ids at or above it are an error. Ignored by the other sources.
        token_dtype: For a raw binary ``tokens`` file: the integer type of each id.
        seq_len: Tokens per training window (the TBPTT length in ``contiguous`` mode).
        batch_size: The global batch: under DDP each of W ranks takes batch_size / W.
        batching: ``windows`` (independent windows, shuffled) or ``contiguous`` (rows
            read in order, with the LSTM state carried across batches; TBPTT).
        val_fraction: Share of the stream held out for validation (after train).
        test_fraction: Share of the stream held out for test (at the end).
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: Seed of the synthetic process and of the window order.
        synthetic_tokens: Total tokens the synthetic process generates.
        synthetic_states: Hidden states of the synthetic HMM (more: harder).
        synthetic_vocab: Vocabulary size of the synthetic HMM.
        synthetic_branching: Successor states per hidden state.
        synthetic_emission_support: Tokens each hidden state can emit.
        steps_per_batch: Optimizer steps per Lightning batch (K): the training loader yields
            K batches at once and the model steps on each in turn, so Lightning's fixed cost
            per batch is paid once per K steps. Results do not depend on it. ``auto``: the
            largest K up to 16 that divides every setting counted in steps (1 under DDP).
    """

    def __init__(
        self,
        source: Source = "synthetic",
        path: str | None = None,
        vocab_size: PositiveInt | None = None,
        token_dtype: Literal["uint8", "uint16", "int32", "uint32", "int64"] = "uint16",
        seq_len: PositiveInt = 64,
        batch_size: PositiveInt = 32,
        batching: Batching = "windows",
        val_fraction: OpenUnitInterval = 0.05,
        test_fraction: OpenUnitInterval = 0.05,
        num_workers: NonNegativeInt = 0,
        seed: int = 0,
        synthetic_tokens: PositiveInt = 1_048_576,
        synthetic_states: PositiveInt = 128,
        synthetic_vocab: PositiveInt = 64,
        synthetic_branching: PositiveInt = 2,
        synthetic_emission_support: PositiveInt = 4,
        steps_per_batch: PositiveInt | Literal["auto"] = "auto",
    ):
        super().__init__()
        # The ranges are the annotations' types: the parser checks them on every entry
        # point; this applies the same types to a module built in Python.
        ranges.check(SequenceDataModule, "data", locals())
        # vocab_size stays out of hparams: the model's vocab_size is the one in use.
        self.save_hyperparameters(ignore=["vocab_size"])
        self.requested_vocab_size = vocab_size
        check(
            source in ("synthetic", "text", "tokens"),
            f"data.source: unknown source {source!r}; use synthetic, text or tokens",
        )
        # The K in use; fused.FusedSteps resolves auto when a fit sets up (any Trainer).
        self.steps_per_batch = 1 if steps_per_batch == "auto" else steps_per_batch
        # Optimizer steps of the one Lightning epoch a run is (RunSampler), or None: an
        # epoch is a data epoch. fused.FusedSteps sets it with K.
        self.run_steps: int | None = None
        check(
            val_fraction + test_fraction < 1,
            "data.val_fraction + data.test_fraction must be below 1, leaving a train split",
        )
        check(
            source == "synthetic" or path is not None,
            f"data.path is required for source: {source}; point it at your file",
        )
        self._corpus: Corpus | None = None
        self.loss_floor: dict[str, float] = {}  # split -> exact NLL per token, synthetic only

    # --- loading -------------------------------------------------------------------

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = load_corpus(self.hparams, self.requested_vocab_size)
            self._check_split_lengths(self._corpus)
        return self._corpus

    @property
    def vocab_size(self) -> int:
        """Linked into ``model.vocab_size`` when the CLI instantiates the classes."""
        return self.corpus.vocab_size

    def _check_split_lengths(self, corpus: Corpus) -> None:
        hp = self.hparams
        if hp.batching == "contiguous":
            need, what = hp.batch_size * (hp.seq_len + 1), "batch_size rows of seq_len + 1"
            smaller = "data.seq_len or data.batch_size"
        else:
            need, what = hp.seq_len + 1, "one window (seq_len + 1)"
            smaller = "data.seq_len"
        more = "data.synthetic_tokens" if hp.source == "synthetic" else "file"
        share = {  # the keys that give a split more of the stream
            "train": "smaller data.val_fraction and data.test_fraction",
            "val": "larger data.val_fraction",
            "test": "larger data.test_fraction",
        }
        for split in ("train", "val", "test"):
            n = len(getattr(corpus, split))
            check(
                n >= need,
                f"data: the {split} split has {n} tokens, fewer than the {need} that "
                f"{what} needs; use a larger {more}, a {share[split]}, or a smaller {smaller}",
            )

    # --- batches -------------------------------------------------------------------

    def _local_batch_size(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        check(
            self.hparams.batch_size % world == 0,
            f"data.batch_size={self.hparams.batch_size} is the global batch and must "
            f"divide among the {world} processes (devices x nodes); use a multiple of {world}",
        )
        return self.hparams.batch_size // world

    def train_steps_per_epoch(self) -> int:
        """Batches of ``batch_size`` (optimizer steps) in one training epoch of this process."""
        return len(self._sampler("train", train=True)) // self._local_batch_size()

    def _sampler(self, split: str, train: bool) -> EpochSampler:
        hp = self.hparams
        n = len(getattr(self.corpus, split))
        trainer = self.trainer
        shard = dict(
            position_fn=self._position_fn(train),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            equal_shards=train or hp.batching == "contiguous",
            seed=hp.seed,
        )
        if hp.batching == "contiguous":
            starts = row_chunk_starts(n, hp.seq_len, hp.batch_size)
            return EpochSampler(lambda _: starts, 1, shuffle=False, **shard)
        return EpochSampler(
            lambda phase: window_starts(n, hp.seq_len, phase, shifting=train),
            num_phases=hp.seq_len,
            shuffle=train,
            **shard,
        )

    def _position_fn(self, train: bool) -> Callable[[], tuple[int, int]]:
        """(epoch, items this rank already took in it), from the training batches Lightning
        counts as completed: exact after a resume from any checkpoint, where the trainer's
        epoch counter is not (a fit stopped by max_steps records its epoch as done). A
        Lightning batch is a stack of steps_per_batch batches."""
        trainer = self.trainer
        if not train or trainer is None or not hasattr(trainer, "fit_loop"):
            return lambda: (0, 0)
        items = self.hparams.batch_size // trainer.world_size * self.steps_per_batch  # a batch

        def position() -> tuple[int, int]:
            done = trainer.fit_loop.epoch_loop.batch_progress.total.completed
            per_epoch = trainer.num_training_batches
            if not per_epoch or per_epoch == float("inf"):
                return trainer.current_epoch, 0
            epoch, batches = divmod(done, int(per_epoch))
            return epoch, batches * items

        return position

    def _run_sampler(self) -> RunSampler:
        """The training sampler of a run that is one Lightning epoch (``run_steps``)."""
        batch, loop = self._local_batch_size(), getattr(self.trainer, "fit_loop", None)

        def done() -> int:  # Lightning batches completed in the run, of steps_per_batch each
            completed = 0 if loop is None else loop.epoch_loop.batch_progress.total.completed
            return completed * self.steps_per_batch * batch

        return RunSampler(
            self._sampler("train", train=True),
            epoch_items=self.train_steps_per_epoch() * batch,
            run_items=self.run_steps * batch,
            done_fn=done,
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        steps = self.steps_per_batch if train else 1
        spans_run = train and self.run_steps is not None
        return DataLoader(
            TokenWindows(getattr(self.corpus, split), self.hparams.seq_len),
            batch_size=self._local_batch_size() * steps,
            sampler=self._run_sampler() if spans_run else self._sampler(split, train),
            collate_fn=functools.partial(stack_steps, steps=steps) if train else stack_batch,
            num_workers=self.hparams.num_workers,
            drop_last=train or self.hparams.batching == "contiguous",
            persistent_workers=self.hparams.num_workers > 0,
            # Its own generator: a DataLoader otherwise draws its workers' base seed from
            # the global RNG at every epoch, which a resumed run would draw out of step.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def setup(self, stage: str) -> None:
        hmm = self.corpus.hmm
        if hmm is None:
            return
        for split in ("val", "test"):
            self.loss_floor[split] = self.floor(split)

    def floor(self, split: str) -> float:
        """Exact mean NLL per predicted token of ``split`` under the true process, for the
        same windows (or rows) the model is evaluated on."""
        hp = self.hparams
        stream = np.asarray(getattr(self.corpus, split))
        sampler = self._sampler(split, train=False)
        starts = sampler.order(0)
        if hp.batching == "contiguous":
            row_len = len(stream) // hp.batch_size
            chunks = (row_len - 1) // hp.seq_len
            starts = np.arange(hp.batch_size) * row_len
            length = chunks * hp.seq_len + 1
        else:
            length = hp.seq_len + 1
        index = starts[:, None] + np.arange(length)  # (N, L)
        resets = index % SYNTHETIC_CHAIN_LEN == 0
        return float(synthetic.nll(self.corpus.hmm, stream[index], resets=resets).mean())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
