"""Token sources (corpus): what each file fault says, and the cheap pre-run check."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lstm_lightning import corpus
from lstm_lightning.corpus import MAX_INFERRED_VOCAB, check_source
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError


def test_corpus_does_not_import_lightning():
    """The sources load without Lightning: the sweep's checks and notebooks can use them."""
    code = (
        "import sys, lstm_lightning.corpus; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def ids_npy(tmp_path, ids: np.ndarray, name: str = "ids.npy") -> Path:
    path = tmp_path / name
    np.save(path, ids)
    return path


def write(tmp_path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def corpus_error(**kwargs) -> str:
    """The one line a DataModule gives when its corpus loads."""
    with pytest.raises(ConfigError) as err:
        _ = SequenceDataModule(**{"seq_len": 4, "batch_size": 2, **kwargs}).corpus
    (line,) = str(err.value).splitlines()
    return line


GOOD = np.arange(2000, dtype=np.uint16) % 50


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: ids_npy(t, np.array([], np.int64)), "holds no token ids (an empty array)"),
        (
            lambda t: ids_npy(t, np.zeros((4, 300), np.int64)),
            "must hold a 1-D integer array, got 2-D",
        ),
        (lambda t: ids_npy(t, np.ones(300)), "must hold a 1-D integer array, got 1-D float64"),
        (lambda t: ids_npy(t, np.array([1, "a"], dtype=object)), "got 1-D object"),
    ],
)
def test_npy_files_of_the_wrong_shape_or_kind(tmp_path, make, message):
    path = make(tmp_path)
    assert corpus_error(source="tokens", path=str(path)).startswith(f"data.path: {path} ")
    assert message in corpus_error(source="tokens", path=str(path))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: b"not a numpy file at all, " * 20,  # numpy would call it pickled data
        lambda data: data[:20],  # the header cut short
        lambda data: data[:10] + b"x" * 60 + data[70:],  # a garbled header
    ],
)
def test_a_corrupt_npy_file_says_so_and_how_to_write_one(tmp_path, corrupt):
    path = ids_npy(tmp_path, GOOD)
    path.write_bytes(corrupt(path.read_bytes()))
    line = corpus_error(source="tokens", path=str(path))
    assert line.startswith(f"data.path: {path} is not a valid .npy file (")
    assert line.endswith(
        "write it with numpy.save(path, ids) from a 1-D integer array, or "
        "give a raw file of ids another suffix (e.g. .bin) and set data.token_dtype"
    )
    assert "pickle" not in line


def test_an_npy_file_cut_short_names_the_missing_bytes(tmp_path):
    path = ids_npy(tmp_path, GOOD)
    path.write_bytes(path.read_bytes()[:-100])
    line = corpus_error(source="tokens", path=str(path))
    assert "is cut short: its header promises 2000 ids" in line


def test_a_stray_huge_id_is_refused_unless_the_vocabulary_is_given(tmp_path):
    ids = np.arange(3000, dtype=np.uint32) % 50
    ids[1234] = 2**32 - 7  # one stray id: an inferred vocabulary of 4e9 rows
    path = tmp_path / "ids.bin"
    ids.tofile(path)
    line = corpus_error(source="tokens", path=str(path), token_dtype="uint32")
    assert line == (
        f"data.path: {path} holds token id {2**32 - 7}, above the 16777216 (2**24) ids a "
        "vocabulary is inferred up to: a stray id, or ids written with another dtype "
        "(data.token_dtype)? If the vocabulary is that large, set data.vocab_size"
    )
    given = SequenceDataModule(
        source="tokens", path=str(path), token_dtype="uint32", vocab_size=2**32, seq_len=4
    )
    assert given.vocab_size == 2**32  # the user said so: nothing is allocated here
    ids[1234] = MAX_INFERRED_VOCAB - 1  # the largest id inferred without being told
    ids.tofile(path)
    inferred = SequenceDataModule(source="tokens", path=str(path), token_dtype="uint32", seq_len=4)
    assert inferred.vocab_size == MAX_INFERRED_VOCAB


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(val_fraction=0.45, test_fraction=0.45, seq_len=250),
            "the train split has 200 tokens, fewer than the 251 that one window (seq_len + 1) "
            "needs; use a larger file, a smaller data.val_fraction and data.test_fraction, or "
            "a smaller data.seq_len",
        ),
        (
            dict(val_fraction=0.01, seq_len=30),
            "the val split has 20 tokens, fewer than the 31 that one window (seq_len + 1) "
            "needs; use a larger file, a larger data.val_fraction, or a smaller data.seq_len",
        ),
        (
            dict(batching="contiguous", test_fraction=0.02, seq_len=9, batch_size=8),
            "the test split has 40 tokens, fewer than the 80 that batch_size rows of "
            "seq_len + 1 needs; use a larger file, a larger data.test_fraction, or a smaller "
            "data.seq_len or data.batch_size",
        ),
    ],
)
def test_a_short_split_names_the_keys_that_lengthen_it(tmp_path, kwargs, message):
    path = ids_npy(tmp_path, GOOD)
    line = corpus_error(source="tokens", path=str(path), **kwargs)
    assert line == f"data: {message}"
    assert "train_fraction" not in line


def test_a_short_synthetic_split_asks_for_more_synthetic_tokens():
    line = corpus_error(synthetic_tokens=4096, test_fraction=0.001, seq_len=8)
    assert "use a larger data.synthetic_tokens, a larger data.test_fraction" in line


# --- the pre-run check -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, make, message",
    [
        ("tokens", lambda t: t / "nope.npy", "does not exist"),
        ("text", lambda t: t, "is not a file"),
        ("text", lambda t: write(t, "e.txt", b""), "is empty"),
        (
            "tokens",
            lambda t: write(t, "o.bin", b"abc"),
            "is not a whole number of uint16 ids; set data.token_dtype",
        ),
        ("tokens", lambda t: ids_npy(t, np.array([], np.uint8)), "holds no token ids"),
    ],
)
def test_check_source_refuses_a_bad_file_in_one_line(tmp_path, source, make, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_source(source, str(path))
    assert str(err.value).startswith(f"data.path: {path} {message}")


def test_check_source_refuses_an_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "ids.bin", b"\0\1")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(corpus, "open", denied, raising=False)  # root reads a chmod 000 file
    with pytest.raises(ConfigError) as err:
        check_source("tokens", str(path))
    assert str(err.value) == f"data.path: {path} cannot be read (Permission denied)"


def test_check_source_needs_a_path_but_not_for_synthetic():
    check_source("synthetic", None)
    with pytest.raises(ConfigError, match="data.path is required for source: text"):
        check_source("text", None)


def test_check_source_reads_headers_not_data(tmp_path):
    """A sparse 4 GB .npy passes in no time: only its header is read."""
    path = tmp_path / "big.npy"
    header = np.lib.format
    with open(path, "wb") as f:
        header.write_array_header_1_0(
            f, {"descr": "<u2", "fortran_order": False, "shape": (2**31,)}
        )
        f.truncate(f.tell() + 2**32)
    started = time.perf_counter()
    check_source("tokens", str(path))
    assert time.perf_counter() - started < 1.0
