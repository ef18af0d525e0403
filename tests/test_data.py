"""The DataModule: exact window indices, DDP splitting, sources, floors and bad files."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from lstm_lightning import synthetic
from lstm_lightning.data import SequenceDataModule, TokenWindows
from lstm_lightning.errors import ConfigError
from lstm_lightning.samplers import EpochSampler, RunSampler, row_chunk_starts, window_starts


def small(**kw) -> SequenceDataModule:
    args = dict(
        synthetic_tokens=16384, synthetic_states=8, synthetic_vocab=8, seq_len=8, batch_size=4
    )
    return SequenceDataModule(**{**args, **kw})


# --- indices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, seq_len, phase, shifting, expected",
    [
        (20, 4, 0, False, [0, 4, 8, 12]),  # 12 + 5 = 17 <= 20; 16 + 5 > 20
        (21, 4, 0, False, [0, 4, 8, 12, 16]),  # 16 + 5 = 21 fits exactly
        (20, 4, 3, True, [3, 7, 11, 15]),  # the shifting count fits every phase
        (20, 4, 0, True, [0, 4, 8, 12]),
        (4, 4, 0, False, []),  # shorter than one window
    ],
)
def test_window_starts(n, seq_len, phase, shifting, expected):
    assert window_starts(n, seq_len, phase, shifting).tolist() == expected


def test_row_chunk_starts_is_chunk_major():
    # 22 tokens in 2 rows of 11; 3 chunks of 3 (+1 target) per row.
    assert row_chunk_starts(22, 3, 2).tolist() == [0, 11, 3, 14, 6, 17]


def test_token_windows_gather_from_tensor_and_memmap(tmp_path):
    stream = np.arange(100, dtype=np.uint16)
    path = tmp_path / "ids.bin"
    stream.tofile(path)
    expected = [[5, 6, 7, 8], [40, 41, 42, 43]]
    for source in (torch.from_numpy(stream.astype(np.int64)), np.memmap(path, np.uint16)):
        batch = TokenWindows(source, seq_len=3).__getitems__([5, 40])
        assert batch.dtype == torch.int64
        assert batch.tolist() == expected


def test_shuffled_epochs_are_deterministic_and_differ():
    sampler = EpochSampler(lambda p: window_starts(1000, 10, p, True), 10, True, seed=1)
    first, again, second = sampler.order(0), sampler.order(0), sampler.order(1)
    assert first.tolist() == again.tolist()
    assert first.tolist() != second.tolist()
    assert len(first) == len(second) == len(sampler)
    assert sorted(np.diff(np.sort(first)).tolist()) == [10] * (len(first) - 1)


def fake_trainer(world_size=1, rank=0):
    return SimpleNamespace(world_size=world_size, global_rank=rank, current_epoch=0)


@pytest.mark.parametrize("batching", ["windows", "contiguous"])
def test_ddp_ranks_together_see_the_single_process_batch(batching):
    # The union of the ranks' batch i must be the single-process batch i, so the global
    # batch does not depend on the world size.
    dm = small(batching=batching, batch_size=8)
    dm.trainer = fake_trainer()
    single = np.array(list(dm._sampler("train", train=True)))
    batches = len(single) // 8  # the DataLoader drops the last partial batch
    single = single[: batches * 8].reshape(batches, 8)
    per_rank = []
    for rank in range(2):
        dm.trainer = fake_trainer(2, rank)
        sampler = dm._sampler("train", train=True)
        assert isinstance(sampler, DistributedSampler)  # so Lightning does not wrap it
        per_rank.append(np.array(list(sampler))[: batches * 4].reshape(batches, 4))
    for i, batch in enumerate(single):
        union = np.concatenate([ranks[i] for ranks in per_rank])
        assert sorted(union.tolist()) == sorted(batch.tolist())
    if batching == "contiguous":  # each rank keeps its rows from batch to batch (TBPTT)
        row_len = len(dm.corpus.train) // 8
        for ranks in per_rank:
            rows = ranks // row_len  # (batches, 4)
            assert (rows == rows[0]).all()


def test_ddp_validation_covers_every_window_once():
    dm = small(batch_size=8)
    dm.trainer = fake_trainer()
    everything = list(dm._sampler("val", train=False))
    shards = []
    for rank in range(3):
        dm.trainer = fake_trainer(3, rank)
        shards += list(dm._sampler("val", train=False))
    assert sorted(shards) == sorted(everything)


def test_contiguous_batches_continue_each_row():
    dm = small(batching="contiguous", batch_size=4)
    dm.trainer = None
    loader = dm.train_dataloader()
    batches = [stack[0] for _, stack in zip(range(3), loader)]  # stacks of 1 batch (B, T+1)
    for prev, nxt in zip(batches, batches[1:]):
        assert torch.equal(prev[:, -1], nxt[:, 0])  # chunk i+1 starts where chunk i ended


def test_global_batch_must_divide_among_ranks():
    dm = small(batch_size=8)
    dm.trainer = fake_trainer(3)
    with pytest.raises(ConfigError, match="batch_size=8 .* 3 processes"):
        dm.train_dataloader()
    dm.trainer = fake_trainer(2)
    assert next(iter(dm.train_dataloader())).shape == (1, 4, 9)


@pytest.mark.parametrize("batching", ["windows", "contiguous"])
def test_a_stack_holds_the_next_k_batches(batching):
    # Stack i of K batches is batches iK .. iK + K - 1 of K = 1, so every step sees the
    # same batch whatever K is; a short last stack is dropped like a short batch.
    one, four = small(batching=batching), small(batching=batching, steps_per_batch=4)
    one.trainer = four.trainer = None
    batches = torch.cat(list(one.train_dataloader()))  # (N, B, T+1)
    stacks = list(four.train_dataloader())
    assert stacks[0].shape == (4, 4, 9)
    assert torch.equal(torch.cat(stacks), batches[: len(stacks) * 4])
    assert len(stacks) == len(batches) // 4 == one.train_steps_per_epoch() // 4


def test_a_run_sampler_takes_the_epochs_of_one_batch_a_step_back_to_back():
    # 10 windows an epoch, batches of 3: an epoch's whole batches are its first 9 windows.
    epochs = EpochSampler(lambda p: window_starts(101, 10, p, True), 10, True, seed=1)
    expected = np.concatenate([epochs.order(e)[:9] for e in range(4)])  # (36,)
    done = 0
    run = RunSampler(epochs, epoch_items=9, run_items=30, done_fn=lambda: done)
    assert len(run) == 30
    assert list(run) == expected[:30].tolist()
    done = 12  # a resumed run: 12 windows taken, 3 of them in the second epoch
    assert list(run) == expected[12:30].tolist()


def test_a_stack_may_straddle_two_epochs_when_the_run_is_one_epoch():
    # run_steps set (by fused.FusedSteps): stacks of K = 3 over epochs whose steps 3 does
    # not divide hold the batches K = 1 takes epoch by epoch, in the same order.
    one = small(steps_per_batch=1)
    one.trainer = None
    per_epoch = one.train_steps_per_epoch()
    assert per_epoch % 3 != 0
    batches = []
    for epoch in range(3):
        sampler = one._sampler("train", train=True)
        starts = sampler.order(epoch)[: per_epoch * 4]
        batches.append(TokenWindows(one.corpus.train, 8).__getitems__(starts.tolist()))
    batches = torch.cat(batches).view(-1, 4, 9)  # (3 * per_epoch, B, T+1)
    three = small(steps_per_batch=3)
    progress = SimpleNamespace(total=SimpleNamespace(completed=0))
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
    three.trainer = SimpleNamespace(world_size=1, global_rank=0, fit_loop=loop)
    three.run_steps = 3 * (2 * per_epoch // 3 + 1)  # past the second epoch's end
    stacks = list(three.train_dataloader())
    assert stacks[0].shape == (3, 4, 9)
    assert torch.equal(torch.cat(stacks), batches[: three.run_steps])
    progress.total.completed = 3  # resumed after 3 stacks: 9 steps
    assert torch.equal(torch.cat(list(three.train_dataloader())), batches[9 : three.run_steps])
    three.trainer = None  # outside a fit: from the start
    assert torch.equal(torch.cat(list(three.train_dataloader())), batches[: three.run_steps])


# --- sources ---------------------------------------------------------------------------


def test_synthetic_is_seeded_and_its_floor_is_exact():
    dm, same, other = small(seed=3), small(seed=3), small(seed=4)
    assert torch.equal(dm.corpus.train, same.corpus.train)
    assert not torch.equal(dm.corpus.train, other.corpus.train)
    floor = dm.floor("val")
    # Recompute by hand: the val windows lie inside one chain each (no resets).
    val = dm.corpus.val.numpy()
    starts = window_starts(len(val), 8)
    by_hand = synthetic.nll(dm.corpus.hmm, val[starts[:, None] + np.arange(9)]).mean()
    assert floor == pytest.approx(by_hand, rel=1e-12)
    assert 0 < floor < dm.corpus.hmm.unigram_entropy()


def test_text_source_builds_a_character_vocabulary(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcab" * 200 + "zé", encoding="utf-8")
    dm = SequenceDataModule(
        source="text", path=str(path), seq_len=4, batch_size=2, val_fraction=0.1, test_fraction=0.1
    )
    assert dm.vocab_size == 4  # a, b, c and the unknown symbol
    assert dm.corpus.train[:5].tolist() == [1, 2, 3, 1, 2]
    assert dm.corpus.test[-2:].tolist() == [0, 0]  # z and é never occur in train


@pytest.mark.parametrize("suffix", [".npy", ".bin"])
def test_tokens_source_memory_maps_and_infers_vocab(tmp_path, suffix):
    ids = (np.arange(5000) % 37).astype(np.uint16)
    path = tmp_path / f"ids{suffix}"
    np.save(path, ids) if suffix == ".npy" else ids.tofile(path)
    dm = SequenceDataModule(source="tokens", path=str(path), seq_len=8, batch_size=4)
    assert dm.vocab_size == 37
    assert isinstance(dm.corpus.train, np.memmap)
    assert SequenceDataModule(source="tokens", path=str(path), vocab_size=50).vocab_size == 50


# --- bad input -------------------------------------------------------------------------


def bad_file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "make_kwargs, message",
    [
        (lambda t: dict(source="text", path=str(t / "missing.txt")), "does not exist"),
        (lambda t: dict(source="text", path=bad_file(t, "e.txt", b"")), "is empty"),
        (
            lambda t: dict(source="text", path=bad_file(t, "l.txt", b"ab\xff\xfe" * 50)),
            "not UTF-8 .* offset 2",
        ),
        (
            lambda t: dict(source="text", path=bad_file(t, "s.txt", b"abc" * 20), seq_len=32),
            "val split has 3 tokens, fewer than the 33 .* one window",
        ),
        (
            lambda t: dict(
                source="tokens",
                path=bad_file(t, "v.bin", np.arange(300, dtype=np.uint16).tobytes()),
                vocab_size=100,
            ),
            "token id 299, at or above data.vocab_size=100",
        ),
        (
            lambda t: dict(source="tokens", path=bad_file(t, "odd.bin", b"\x01\x02\x03")),
            "not a whole number of uint16",
        ),
        (lambda t: dict(source="tokens", path=None), "data.path is required"),
        (lambda t: dict(source="wav"), "unknown source 'wav'"),
        (lambda t: dict(seq_len=0), "data.seq_len must be a positive integer, got 0"),
        (lambda t: dict(steps_per_batch=0), "data.steps_per_batch must be a positive integer"),
        (lambda t: dict(val_fraction=0.6, test_fraction=0.5), "leaving a train split"),
        (lambda t: dict(synthetic_branching=999), "branching must be between 1 and"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, make_kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _ = SequenceDataModule(**make_kwargs(tmp_path)).corpus
