"""What a stopped fit keeps, and how it continues: Ctrl-C and SIGTERM stop between steps
with last.ckpt saved (``StopOnSignal``), last.ckpt always holds a run's end
(``LastAtEnd``), and ``--ckpt_path last`` finds the run's last.ckpt and continues in its
folder (``find_last``). A checkpoint is read with ``weights_only=True``: no code in it runs.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lstm_lightning import checkpoints
from lstm_lightning.errors import ConfigError, check
from lstm_lightning.module import LanguageModel


class Interrupted(SystemExit):
    """Ctrl-C or SIGTERM stopped a fit between two steps; its exit status is 128 + signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message


class StopOnSignal(Callback):
    """Ctrl-C or SIGTERM: at the end of the current batch, when the progress counters
    agree (as for a periodic save), save last.ckpt; before the next one, print one line and
    raise ``Interrupted``.

    Lightning itself only notes SIGTERM and stops at the end of the epoch, exiting 0, and
    turns Ctrl-C into exit 1 with nothing saved. A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stop: Interrupted | None = None  # saved: raised before the next batch
        self._previous: dict[int, object] = {}

    def _note(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: do not wait for the step to end
        self.signum = signum
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)  # Lightning's (it tells DDP ranks) or a runner's

    def on_train_start(self, trainer, pl_module) -> None:
        self.signum = self.stop = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(signum)
            # A process that ignores Ctrl-C (a sweep's worker) keeps ignoring it.
            if signum == signal.SIGINT and current is not signal.default_int_handler:
                continue
            self._previous[signum] = current
            signal.signal(signum, self._note)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()
        # Lightning stops by itself after the batch that saw SIGTERM, once it has logged
        # that batch: after our save, if there was time for one.
        if isinstance(exception, SIGTERMException) and trainer.is_global_zero:
            message = (
                self.stop.message
                if self.stop is not None
                else (
                    f"stopped by SIGTERM at step {trainer.global_step}: not saved; --ckpt_path "
                    "last continues from the last periodic checkpoint"
                )
            )
            print(message, file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop is not None:
            return
        if not trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
            return
        signum = self.signum or signal.SIGTERM  # another rank saw it
        saved = last_checkpoint_path(trainer)
        if saved is not None:
            trainer.save_checkpoint(saved, weights_only=False)  # every rank; rank 0 writes
        where = (
            f"saved {saved}; the same command with --ckpt_path last continues it"
            if saved is not None
            else "nothing saved (checkpointing is off)"
        )
        name = signal.Signals(signum).name
        self.stop = Interrupted(signum, f"stopped by {name} at step {trainer.global_step}: {where}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Stop here, not at the batch end above: Lightning logs a batch's metrics after
        # its on_train_batch_end, and the checkpoint resumes after that batch.
        if self.stop is not None:
            if trainer.is_global_zero:
                print(self.stop.message, file=sys.stderr, flush=True)
            raise self.stop


def last_checkpoint_path(trainer: Trainer) -> str | None:
    """Where the run's last.ckpt goes, or None when no checkpoint callback saves one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            name = callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
            return os.path.join(callback.dirpath, name)
    return None


class LastAtEnd(Callback):
    """last.ckpt holds the end of the run, also when the last periodic save came earlier.

    With ``checkpoint.every_n_train_steps`` set, ModelCheckpoint writes last.ckpt at the
    end of a fit only if it never wrote one: a run of 1500 steps saving every 1000 would
    keep step 1000 as its last.ckpt, for validate and for a resume alike.
    """

    saved_step: int | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        path = last_checkpoint_path(trainer)
        # An empty last_model_path: ModelCheckpoint never saved one and does so next.
        written = any(getattr(c, "last_model_path", "") for c in trainer.checkpoint_callbacks)
        if path is not None and written and self.saved_step != trainer.global_step:
            trainer.save_checkpoint(path, weights_only=False)


def is_tensorboard(logger) -> bool:
    return str(getattr(logger, "class_path", "")).endswith("TensorBoardLogger")


def find_last(config) -> tuple[str, dict]:
    """``--ckpt_path last``: the run's last.ckpt, and the logger settings that continue
    the run in its folder (its newest ``version_N`` holding one)."""
    dirpath = config.get("checkpoint") and config.checkpoint.dirpath
    logger = config.trainer.logger
    if dirpath:
        folders, where = [(Path(dirpath), {})], str(dirpath)
    elif is_tensorboard(logger):
        args = logger.init_args
        root = Path(args.save_dir) / (args.name or "")
        if args.version is not None:
            version = args.version if isinstance(args.version, str) else f"version_{args.version}"
            runs = [root / version]
        else:
            numbered = [p for p in root.glob("version_*") if p.name[8:].isdigit()]
            runs = sorted(numbered, key=lambda p: -int(p.name[8:]))
        folders = [(run / "checkpoints", {"version": run.name}) for run in runs]
        where = f"{root}/version_*/checkpoints" if args.version is None else str(runs[0])
    else:
        root = Path(config.trainer.default_root_dir or ".")
        folders, where = [(root / "checkpoints", {})], str(root / "checkpoints")
    for folder, logger_args in folders:
        if (folder / "last.ckpt").is_file():
            return str(folder / "last.ckpt"), logger_args
    raise ConfigError(f"--ckpt_path last: no last.ckpt in {where}; start without --ckpt_path")


def read_checkpoint(path: str) -> dict:
    """The Lightning checkpoint at ``path`` (tensors memory-mapped, no code run), or a
    ConfigError line."""
    checkpoint = checkpoints.load(path, mmap=True)
    check(
        "state_dict" in checkpoint,
        f"--ckpt_path: {path} is not a Lightning checkpoint (no state_dict)",
    )
    return checkpoint


def check_same_model(config, checkpoint: dict, path: str, subcommand: str | None) -> None:
    """A model key set (by flag or config) to other than its default and the checkpoint's
    value: LightningCLI would silently take the checkpoint's, so refuse it in one line."""
    saved = checkpoint.get("hyper_parameters", {})
    defaults = inspect.signature(LanguageModel).parameters
    for key, value in config.model.items():
        if key not in saved or key not in defaults:
            continue
        ours, theirs, default = (
            list(v) if isinstance(v, tuple | list) else v
            for v in (value, saved[key], defaults[key].default)
        )
        if ours != theirs and ours != default:
            run_config = Path(path).parent.parent / "config.yaml"
            hint = f"--config {run_config}" if run_config.is_file() else "the run's config"
            raise ConfigError(
                f"{subcommand} --ckpt_path: model.{key} is {value!r} here but {saved[key]!r} in "
                f"the checkpoint, which keeps its own model; drop it or use {hint}"
            )
