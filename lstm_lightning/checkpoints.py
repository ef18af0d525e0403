"""Checkpoints are data: loaded as tensors and plain values, never as arbitrary objects.

A checkpoint's pickle may name any Python callable, and ``torch.load(weights_only=False)``
calls it: a planted ``.ckpt`` would run code. Every load goes through ``load``, which uses
torch's weights-only unpickler (tensors, containers, numbers, strings and the few types
in ``SAFE_GLOBALS``) and refuses anything else in one line naming the file, without
running it (``Unreadable``). ``SafeCheckpointIO`` makes Lightning's own load of
``ckpt_path`` do the same, whatever ``--weights_only`` says; ``SafeCheckpoints`` installs it
on any trainer (the model adds it in ``configure_callbacks``), before Lightning restores a
checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from lstm_lightning.errors import ConfigError
from lstm_lightning.ranges import RULES

# What our checkpoints may hold beyond torch's defaults: the range types, should a
# hyperparameter arrive as one (a model built in Python from parsed values).
SAFE_GLOBALS = list(RULES)
torch.serialization.add_safe_globals(SAFE_GLOBALS)


class Unreadable(ConfigError):
    """``load``'s refusal of a file, worded for the setting that named it; ``cause`` is
    why, without the file's name, for a caller that words it otherwise."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def load(path, map_location: Any = "cpu", mmap: bool = False, what: str = "--ckpt_path") -> dict:
    """The checkpoint at ``path``, unpickled with ``weights_only=True``; an ``Unreadable``
    line (``what``: the setting that named it) for a file that is not such a checkpoint.
    ``mmap`` reads no tensor until used (zip checkpoints, which Lightning writes)."""
    try:
        mmap = mmap and zipfile.is_zipfile(path)
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise Unreadable(f"{what}: {path} does not exist", "it does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise Unreadable(
                f"{what}: {path} holds a Python object ({found[1]}) that a checkpoint never "
                "needs; refused unread (nothing in it ran). Use a checkpoint this project wrote",
                f"it holds a Python object ({found[1]}); refused unread, nothing in it ran",
            ) from None
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        reason = unpickler[1] if unpickler else str(err).strip().split("\n")[0].split(". ")[0]
        cause = f"{reason or 'empty'}; truncated, or not written by torch.save"
        raise Unreadable(f"{what}: {path} is not a readable checkpoint ({cause})", cause) from None
    if not isinstance(checkpoint, dict):
        raise Unreadable(f"{what}: {path} is not a Lightning checkpoint", "it is not a dict")
    return checkpoint


def left_to_lightning(path: str) -> bool:
    """Whether a ``--ckpt_path`` is a keyword Lightning resolves itself (``hpc``,
    ``registry...``) or a URL, rather than a file to check here."""
    keyword = path == "hpc" or str(path).startswith("registry") or "://" in str(path)
    return keyword and not os.path.isfile(path)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, loading through ``load`` (``weights_only=True`` always)."""

    def load_checkpoint(
        self, path, map_location=lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict:
        return load(path, map_location=map_location, what="ckpt_path")


class SafeCheckpoints(Callback):
    """Puts ``SafeCheckpointIO`` in place of a trainer's default checkpoint IO at ``setup``,
    which Lightning runs before it restores ``ckpt_path``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
