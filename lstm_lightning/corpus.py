"""Token sources: three contiguous 1-D token streams (train, val, test) from a file or
from the embedded synthetic process. No Lightning here: the DataModule (``data``) batches
what this module loads, and the sweep checks every run's data file with ``check_source``
(headers only) before the first run starts.

- ``synthetic``: a seeded random HMM (``synthetic``), sampled as independent chains of
  ``SYNTHETIC_CHAIN_LEN`` tokens; its exact loss floor is known.
- ``text``: a UTF-8 file, one id per character; id 0 is any character the train split
  never shows.
- ``tokens``: a ``.npy`` file of a 1-D integer array, or a raw binary file of ids of
  ``token_dtype``; memory-mapped, so only the pages a batch touches are read.

The stream is split in order: train, then val (``val_fraction``), then test
(``test_fraction``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from lstm_lightning import synthetic
from lstm_lightning.errors import ConfigError, check

Source = Literal["synthetic", "text", "tokens"]

# The synthetic corpus is made of independent stationary chains of this length; the
# floor computation resets the HMM belief at each chain start, so it stays exact.
SYNTHETIC_CHAIN_LEN = 4096


@dataclass
class Corpus:
    """Three token streams (1-D int arrays or tensors) and what is known about them."""

    train: np.ndarray | torch.Tensor
    val: np.ndarray | torch.Tensor
    test: np.ndarray | torch.Tensor
    vocab_size: int
    hmm: synthetic.HMM | None = None  # the true process, when there is one


# --- sources -----------------------------------------------------------------------


def split_points(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Ends of train and val in a stream of ``n`` tokens (train, then val, then test)."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return n - n_val - n_test, n - n_test


def load_corpus(hp, vocab_size: int | None = None) -> Corpus:
    """Build the ``Corpus`` the hyperparameters describe; raise ``ConfigError`` on bad data."""
    if hp.source == "tokens":
        return tokens_corpus(hp, vocab_size)
    return synthetic_corpus(hp) if hp.source == "synthetic" else text_corpus(hp)


def synthetic_corpus(hp) -> Corpus:
    try:
        hmm = synthetic.make_hmm(
            hp.synthetic_states,
            hp.synthetic_vocab,
            hp.synthetic_branching,
            hp.synthetic_emission_support,
            hp.seed,
        )
    except ValueError as err:
        raise ConfigError(f"data.{err}") from None
    train_end, val_end = split_points(hp.synthetic_tokens, hp.val_fraction, hp.test_fraction)
    sizes = (train_end, val_end - train_end, hp.synthetic_tokens - val_end)
    streams = []
    for i, size in enumerate(sizes):
        chains = -(-size // SYNTHETIC_CHAIN_LEN)  # ceil
        tokens = synthetic.sample(hmm, chains, SYNTHETIC_CHAIN_LEN, seed=hp.seed * 3 + i + 1)
        streams.append(torch.from_numpy(tokens.reshape(-1)[:size].copy()))
    return Corpus(*streams, vocab_size=hmm.vocab_size, hmm=hmm)


def check_source(source: str, path: str | None, token_dtype: str = "uint16") -> None:
    """Raise ``ConfigError`` unless ``source``'s file is there and readable, without
    loading it: cheap enough to call on every run of a sweep before the first starts.

    Checks that the file exists, is a readable non-empty file and, for ``tokens``, that a
    ``.npy`` file has a valid header for a non-empty 1-D integer array whose data is all
    there, or that a raw file is a whole number of ``token_dtype`` ids. What only the
    data can tell (UTF-8 text, id range) is checked when it loads.
    """
    if source == "synthetic":
        return
    check(path is not None, f"data.path is required for source: {source}; point it at your file")
    check(os.path.exists(path), f"data.path: {path} does not exist")
    check(os.path.isfile(path), f"data.path: {path} is not a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise ConfigError(f"data.path: {path} cannot be read ({err.strerror})") from None
    size = os.path.getsize(path)
    check(size > 0, f"data.path: {path} is empty")
    if source != "tokens":
        return
    if path.endswith(".npy"):
        npy_layout(path)
    else:
        itemsize = np.dtype(token_dtype).itemsize
        check(
            size % itemsize == 0,
            f"data.path: {path} is not a whole number of {token_dtype} ids; "
            "set data.token_dtype to the type it was written with",
        )


NPY_HOWTO = (
    "write it with numpy.save(path, ids) from a 1-D integer array, or give a raw file of "
    "ids another suffix (e.g. .bin) and set data.token_dtype"
)


def npy_layout(path: str) -> tuple[int, np.dtype]:
    """(number of ids, dtype) from a ``.npy`` file's header; ``ConfigError`` unless it
    is a valid header for a non-empty 1-D integer array whose data is all in the file."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            read_header = (
                fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
        except (ValueError, SyntaxError, EOFError) as err:
            raise ConfigError(
                f"data.path: {path} is not a valid .npy file ({' '.join(str(err).split())}); "
                + NPY_HOWTO
            ) from None
        offset = f.tell()
    check(
        len(shape) == 1 and np.issubdtype(dtype, np.integer),
        f"data.path: {path} must hold a 1-D integer array, got {len(shape)}-D {dtype}; "
        + NPY_HOWTO,
    )
    check(shape[0] > 0, f"data.path: {path} holds no token ids (an empty array)")
    need = offset + shape[0] * dtype.itemsize
    check(
        os.path.getsize(path) >= need,
        f"data.path: {path} is cut short: its header promises {shape[0]} ids "
        f"({need} bytes) but the file has {os.path.getsize(path)}; write it again",
    )
    return shape[0], dtype


def read_file(path: str) -> bytes:
    """The whole of a text file, after ``check_source``'s checks."""
    check_source("text", path)
    with open(path, "rb") as f:
        return f.read()


def text_corpus(hp) -> Corpus:
    raw = read_file(hp.path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"data.path: {hp.path} is not UTF-8 text (bad byte at offset {err.start}); "
            "convert it (iconv -t UTF-8) or use source: tokens"
        ) from None
    # Code points as one array: no per-character Python loop.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,)
    train_end, val_end = split_points(len(codes), hp.val_fraction, hp.test_fraction)
    chars = np.unique(codes[:train_end])  # sorted vocabulary of the train split
    # Id 0 is the unknown symbol, for characters the train split never shows.
    pos = np.clip(np.searchsorted(chars, codes), 0, len(chars) - 1)
    ids = np.where(chars[pos] == codes, pos + 1, 0).astype(np.int64)
    stream = torch.from_numpy(ids)
    return Corpus(
        stream[:train_end], stream[train_end:val_end], stream[val_end:], vocab_size=len(chars) + 1
    )


# The largest vocabulary inferred from the ids (data.vocab_size unset). Real vocabularies
# are far below it (about 2**17 for large models); a larger id is a stray one (a corrupt
# file, ids written with another dtype) that would ask for an embedding of terabytes. A
# truly larger vocabulary is given as data.vocab_size.
MAX_INFERRED_VOCAB = 2**24


def tokens_corpus(hp, vocab_size: int | None) -> Corpus:
    path = hp.path
    check_source("tokens", path, hp.token_dtype)
    if path.endswith(".npy"):
        ids = np.load(path, mmap_mode="r")  # the header was checked: a memory map
    else:
        ids = np.memmap(path, dtype=hp.token_dtype, mode="r")
    low, high = id_range(ids)
    check(low >= 0, f"data.path: {path} holds a negative token id ({low})")
    check(
        vocab_size is not None or high < MAX_INFERRED_VOCAB,
        f"data.path: {path} holds token id {high}, above the {MAX_INFERRED_VOCAB} (2**24) "
        "ids a vocabulary is inferred up to: a stray id, or ids written with another "
        "dtype (data.token_dtype)? If the vocabulary is that large, set data.vocab_size",
    )
    vocab = vocab_size if vocab_size is not None else high + 1
    check(
        high < vocab,
        f"data.path: {path} holds token id {high}, at or above data.vocab_size={vocab}; "
        f"raise data.vocab_size to at least {high + 1}",
    )
    train_end, val_end = split_points(len(ids), hp.val_fraction, hp.test_fraction)
    return Corpus(ids[:train_end], ids[train_end:val_end], ids[val_end:], vocab_size=int(vocab))


def id_range(ids: np.ndarray, chunk: int = 1 << 24) -> tuple[int, int]:
    """(min, max) of a possibly memory-mapped array, read in chunks of ``chunk`` ids."""
    low, high = None, None
    for i in range(0, len(ids), chunk):
        part = np.asarray(ids[i : i + chunk])
        low = int(part.min()) if low is None else min(low, int(part.min()))
        high = int(part.max()) if high is None else max(high, int(part.max()))
    return low, high
