"""Fused optimizer steps: K consecutive batches in one Lightning batch, one optimizer step each.

Lightning's fixed cost per training batch (~1.4 ms) is more than a fifth of a width-16
LSTM step. With ``data.steps_per_batch`` = K, the training loader yields a (K, B, T+1)
stack and ``LanguageModel.training_step`` takes one optimizer step per sub-batch, so the
fixed cost is paid once per K steps. Every setting keeps counting optimizer steps.

Everything K needs lives here: the resolver, the collate that stacks, the ``FusedSteps``
callback (K resolved in ``setup`` for any ``Trainer``; the settings that Lightning counts
in batches and the progress bar adapted), the step loop's bookkeeping (the logging
counter, the direct step) and the conversion of a checkpoint's batch counts between K.

Private Lightning APIs: this module and ``requeue`` are the only ones that use any; each
use carries a comment naming what it reads and the version it was checked against, so
widening the Lightning pin means reading these two files.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import lightning as L
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden

from lstm_lightning.errors import check

if TYPE_CHECKING:
    from lstm_lightning.data import SequenceDataModule


# The largest K that ``steps_per_batch: auto`` picks: at width 16 Lightning's ~1.4 ms of
# fixed cost per batch is then under 0.1 ms a step.
MAX_STEPS_PER_BATCH = 16


def stack_steps(batch: torch.Tensor, steps: int) -> torch.Tensor:
    """Collate for training: (K * B, T+1) from ``__getitems__`` -> (K, B, T+1), one batch a step."""
    return batch.view(steps, -1, batch.shape[-1])


def resolve_steps_per_batch(
    requested: int | Literal["auto"], counts: dict[str, int], only_one: str | None = None
) -> int:
    """K for ``data.steps_per_batch``: every count of optimizer steps must fall on a batch edge.

    ``counts`` names each setting counted in steps, e.g. ``{"trainer.max_steps": 1000}``;
    ``only_one`` says why K must be 1 (e.g. DDP), or is None. ``auto`` is the largest K up
    to ``MAX_STEPS_PER_BATCH`` that divides every count; an explicit K that does not is a
    ``ConfigError`` naming both settings.

    >>> resolve_steps_per_batch("auto", {"trainer.max_steps": 1000, "trainer.log_every_n_steps": 50})
    10
    """
    if requested == "auto":
        if only_one is not None:
            return 1
        fits = [
            k for k in range(1, MAX_STEPS_PER_BATCH + 1) if all(c % k == 0 for c in counts.values())
        ]
        return fits[-1]
    check(
        requested == 1 or only_one is None,
        f"data.steps_per_batch={requested} needs {only_one}; use data.steps_per_batch: auto",
    )
    for name, count in counts.items():
        check(
            count % requested == 0,
            f"data.steps_per_batch={requested} must divide {name}={count} (a Lightning batch "
            f"holds {requested} optimizer steps); use a divisor of {count} or "
            "data.steps_per_batch: auto",
        )
    return requested


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps, however many steps a Lightning batch holds
    (``steps_per_batch``, set by ``FusedSteps``), and redraws every ``refresh_rate`` of them but
    at most every ``min_interval`` seconds: a redraw (~1 ms) outlasts a narrow LSTM step."""

    steps_per_batch = 1
    min_interval = 0.5
    clock = staticmethod(time.monotonic)
    _drawn = -math.inf  # clock() at the last redraw

    @property
    def total_train_batches(self) -> int | float:
        return super().total_train_batches * self.steps_per_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.is_enabled:
            return
        bar = self.train_progress_bar
        steps, now = (batch_idx + 1) * self.steps_per_batch, self.clock()  # this epoch's
        due = steps % self.refresh_rate < self.steps_per_batch  # crossed a multiple
        if (due and now - self._drawn >= self.min_interval) or steps == bar.total:
            self._drawn, bar.n = now, steps
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws the bar once


class FusedSteps(Callback):
    """Fused steps for any ``Trainer``: resolves K (``data.steps_per_batch``) in ``setup`` and
    makes the settings that Lightning counts in batches count batches of K steps, so that
    every setting keeps its meaning in steps; ``teardown`` gives them back as they were.

    ``LanguageModel.configure_callbacks`` adds one to a trainer that has none. The CLI adds
    its own and calls ``fuse`` as soon as the trainer is built, so that a K that cannot
    keep the settings is refused before anything is written; ``setup`` resolves K again,
    and so does the load of the checkpoint the fit resumes from (``restack_if_fitting``):
    K must also divide the steps that checkpoint stopped at.
    """

    def __init__(self) -> None:
        # (val_check_interval, limit_train_batches) as given, while they are translated
        self.given: tuple | None = None

    def setup(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if stage == "fit" and data is not None and hasattr(data, "steps_per_batch"):
            # Lightning loads the fit's checkpoint after setup (trainer.ckpt_path is still
            # the last fit's here): ``restack_if_fitting`` resolves K again with it.
            self.fuse(trainer, data, None)
            fit_progress_bar(trainer, pl_module, stage)

    def teardown(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore(trainer)

    def on_exception(self, trainer: Trainer, pl_module: L.LightningModule, exception) -> None:
        self.restore(trainer)

    def restore(self, trainer: Trainer) -> None:
        if self.given is not None:
            trainer.val_check_interval, trainer.limit_train_batches = self.given
            self.given = None

    def fuse(self, trainer: Trainer, data: SequenceDataModule, resumed: dict | None) -> None:
        """Resolve K and translate the settings; calling it again starts from the given ones.
        ``resumed``: the checkpoint the fit resumes from (``resumed_counts``), or None.

        ``max_steps``, ``log_every_n_steps`` and ``every_n_train_steps`` need no change: the
        model counts ``global_step`` and Lightning's logging counter per step.
        ``val_check_interval`` and ``limit_train_batches`` are divided by K.
        """
        self.restore(trainer)
        check_supported(trainer)
        data.run_steps = trainer.max_steps if spans_run(trainer, data) else None
        counts, only_one = step_counts(trainer, data, resumed)
        k = resolve_steps_per_batch(data.hparams.steps_per_batch, counts, only_one)
        data.steps_per_batch = k
        if isinstance(trainer.progress_bar_callback, StepProgressBar):
            trainer.progress_bar_callback.steps_per_batch = k
        self.given = (trainer.val_check_interval, trainer.limit_train_batches)
        if k == 1:
            return
        epoch = train_steps(trainer, data)
        interval = trainer.val_check_interval
        if isinstance(interval, int):
            trainer.val_check_interval = interval // k
        elif isinstance(interval, float) and interval != 1.0:
            trainer.val_check_interval = int(epoch * interval) // k
        limit = trainer.limit_train_batches
        if isinstance(limit, int) or limit != 1.0:
            trainer.limit_train_batches = epoch // k


def check_supported(trainer: Trainer) -> None:
    """Refuse the settings that cannot work when a batch takes its own optimizer steps."""
    check(
        trainer.accumulate_grad_batches == 1,
        "trainer.accumulate_grad_batches is not supported (each training batch takes its own "
        "optimizer steps); raise data.batch_size instead",
    )
    for callback in trainer.checkpoint_callbacks:
        check(
            # ModelCheckpoint._train_time_interval: its train_time_interval (a timedelta or
            # None); checked against Lightning 2.6.6
            callback._train_time_interval is None,
            "checkpoint.train_time_interval is not supported (Lightning ignores it under manual "
            "optimization); use checkpoint.every_n_train_steps",
        )


def fit_progress_bar(trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
    """Put a ``StepProgressBar`` in place of Lightning's default bar (tqdm's, or rich's
    where rich is installed), which would count Lightning batches of K steps."""
    for i, default in enumerate(trainer.callbacks):
        if type(default) not in (TQDMProgressBar, RichProgressBar):
            continue
        bar = StepProgressBar(refresh_rate=default.refresh_rate)
        bar.steps_per_batch = trainer.datamodule.steps_per_batch
        if not default.is_enabled:
            bar.disable()
        bar.setup(trainer, pl_module, stage)  # the default's setup may have run already
        trainer.callbacks[i] = bar


def train_steps(trainer: Trainer, data: SequenceDataModule) -> int:
    """Optimizer steps in one training epoch, ``trainer.limit_train_batches`` applied."""
    steps, limit = data.train_steps_per_epoch(), trainer.limit_train_batches
    return min(steps, limit) if isinstance(limit, int) else int(steps * limit)


def step_counts(
    trainer: Trainer, data: SequenceDataModule, resumed: dict | None
) -> tuple[dict[str, int], str | None]:
    """Every count of optimizer steps that must fall on a batch edge, by name, and why a
    batch can hold only one step (or None); ``resumed`` adds the checkpoint's
    (``resumed_counts``)."""
    if trainer.world_size > 1:
        return {}, f"one process: under DDP ({trainer.world_size}) a forward has one backward"
    if trainer.max_steps == -1 or trainer.max_epochs not in (None, -1):
        return {}, "trainer.max_steps and no trainer.max_epochs (the schedule counts steps)"
    counts = {"trainer.max_steps": trainer.max_steps}
    if trainer.log_every_n_steps > 0:
        counts["trainer.log_every_n_steps"] = trainer.log_every_n_steps
    epoch = train_steps(trainer, data)
    interval = trainer.val_check_interval
    if isinstance(interval, int):
        counts["trainer.val_check_interval"] = interval
    elif isinstance(interval, float) and interval != 1.0:
        counts[f"trainer.val_check_interval ({interval} of {epoch} steps)"] = int(epoch * interval)
    for callback in trainer.checkpoint_callbacks:
        # ModelCheckpoint._every_n_train_steps: its every_n_train_steps (0: off); checked
        # against Lightning 2.6.6
        if callback._every_n_train_steps > 0:
            counts["checkpoint.every_n_train_steps"] = callback._every_n_train_steps
    if trainer.max_steps > epoch and data.run_steps is None:  # batches end with the epoch
        counts["the steps of a training epoch"] = epoch
    return {**counts, **(resumed or {})}, None


def resumed_counts(checkpoint: dict) -> dict[str, int]:
    """The steps a checkpoint stopped at that K must divide to resume it: into the run,
    and into its Lightning epoch where that differs (one written while Lightning's epochs
    were the data's, before ``samplers.RunSampler``)."""
    counts = {"the checkpoint's step (--ckpt_path)": checkpoint.get("global_step", 0)}
    # The fit loop's batch_progress: Lightning's checkpoint format, checked against
    # Lightning 2.6.6; its counts are of batches of the K the checkpoint was written with.
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    current = loop.get("epoch_loop.batch_progress", {}).get("current", {}).get("ready")
    if current is not None:
        into_epoch = current * checkpoint.get("steps_per_batch", 1)
        if into_epoch != counts["the checkpoint's step (--ckpt_path)"]:
            counts["the checkpoint's step into its epoch (--ckpt_path)"] = into_epoch
    return counts


def spans_run(trainer: Trainer, data: SequenceDataModule) -> bool:
    """Whether the fit is one Lightning epoch (``samplers.RunSampler``): it crosses the end
    of a data epoch, and nothing tells epochs apart. Then K need not divide an epoch's steps.

    Nothing does when the run is one process of independent windows (no TBPTT state to
    reset at an epoch's start), validates every ``val_check_interval`` steps counted over
    the run (``check_val_every_n_epoch`` None), takes whole epochs and checkpoints by steps
    only. Lightning's ``current_epoch`` then stays 0; the data's epochs go on as before."""
    if trainer.max_steps in (None, -1) or trainer.max_epochs not in (None, -1):
        return False
    for callback in trainer.checkpoint_callbacks:
        # ModelCheckpoint._every_n_epochs: its every_n_epochs (0: off); checked against
        # Lightning 2.6.6
        if callback._every_n_epochs > 0:
            return False
    return (
        trainer.world_size == 1
        and data.hparams.batching == "windows"
        and trainer.check_val_every_n_epoch is None
        and isinstance(trainer.val_check_interval, int)
        and trainer.limit_train_batches == 1.0
        and not isinstance(trainer.limit_train_batches, int)
        and trainer.max_steps > data.train_steps_per_epoch()
    )


def idle_wrappers(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether Lightning's backward and optimizer-step wrappers would only call hooks that do
    nothing: the strategy and precision add nothing (one process, 32-bit), no callback
    listens to the backward or step hooks, the module overrides none but
    ``on_before_optimizer_step``, and no profiler times them."""
    strategy_adds = any(
        getattr(type(trainer.strategy), name) is not getattr(Strategy, name)
        for name in ("backward", "pre_backward", "post_backward", "optimizer_step")
    )
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    listening = any(is_overridden(h, cb, Callback) for cb in trainer.callbacks for h in hooks)
    module_hooks = ("backward", "on_before_backward", "on_after_backward")
    overridden = any(is_overridden(h, module, L.LightningModule) for h in module_hooks)
    return (
        type(trainer.precision_plugin) is Precision
        and isinstance(trainer.profiler, PassThroughProfiler)
        and not (strategy_adds or listening or overridden)
    )


# --- the step loop's bookkeeping (LanguageModel.training_step) -----------------------------


def steps_per_batch(trainer: Trainer) -> int:
    """K: the training batches in one Lightning batch (``data.steps_per_batch``; 1 without one)."""
    return getattr(trainer.datamodule, "steps_per_batch", 1)


def logging_step(trainer: Trainer) -> int:
    """Lightning's logging counter: the step a value logged now is written at."""
    # _TrainingEpochLoop._batches_that_stepped: batches stepped so far (it adds 1 after
    # each batch); checked against Lightning 2.6.6
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logging_step(trainer: Trainer, step: int) -> None:
    """Move the logging counter, so the logged step and a validation's step count steps."""
    # _TrainingEpochLoop._batches_that_stepped, as above; checked against Lightning 2.6.6
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def logs_now(trainer: Trainer) -> bool:
    """Whether the logger writes what is logged at this step (``log_every_n_steps``)."""
    # _LoggerConnector.should_update_logs: reads the counter above and log_every_n_steps;
    # checked against Lightning 2.6.6
    return trainer._logger_connector.should_update_logs


def step_directly(optimizer: LightningOptimizer, before_step: Callable[[object], None]) -> None:
    """``LightningOptimizer.step`` without its wrappers (where ``idle_wrappers`` holds): the
    torch optimizer's step between manual optimization's counting callbacks, which count
    ``trainer.global_step`` as ``step`` does; ``before_step`` is ``on_before_optimizer_step``."""
    # LightningOptimizer._on_before_step/_on_after_step: set by _ManualOptimization to
    # count optim_step_progress (ready, completed); checked against Lightning 2.6.6
    optimizer._on_before_step()
    before_step(optimizer)
    optimizer.optimizer.step()
    optimizer._on_after_step()


def restack_if_fitting(module: L.LightningModule, checkpoint: dict) -> None:
    """On a checkpoint load for a fit, make its batch counts count this fit's batches of K
    (``restack_progress``), before Lightning reads them; a load without a fit keeps them."""
    # LightningModule._trainer: the trainer, or None (the public .trainer raises then);
    # checked against Lightning 2.6.6
    trainer = module._trainer
    if trainer is None or trainer.state.fn != TrainerFn.FITTING:
        return
    # K again, now that the checkpoint is known (``FusedSteps.setup`` ran before it was
    # loaded); the training loader is built after this, with the K resolved here.
    for callback in trainer.callbacks:
        if isinstance(callback, FusedSteps) and trainer.datamodule is not None:
            callback.fuse(trainer, trainer.datamodule, resumed_counts(checkpoint))
    restack_progress(checkpoint, steps_per_batch(trainer))


def restack_progress(checkpoint: dict, steps_per_batch: int) -> None:
    """Make a checkpoint's training progress count Lightning batches of ``steps_per_batch``.

    Lightning counts batches (the data position is read from that count); a checkpoint
    written with K steps a batch counted stacks of K. One written before batches held
    several steps (automatic optimization, K = 1) kept its step count elsewhere: it moves
    to where manual optimization keeps it, so ``global_step`` resumes where it stopped.
    """
    # The fit loop's state_dict keys below (batch_progress, the optimization progress of
    # both modes): Lightning's checkpoint format, checked against Lightning 2.6.6
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if loop is None:
        return
    written = checkpoint.get("steps_per_batch")
    if written is None:
        written = 1
        automatic = loop.get("epoch_loop.automatic_optimization.optim_progress")
        if automatic is not None:
            steps = copy.deepcopy(automatic["optimizer"]["step"])
            loop["epoch_loop.manual_optimization.optim_step_progress"] = steps
    if written == steps_per_batch:
        return
    progress = loop["epoch_loop.batch_progress"]
    for part, where in (("total", "the run"), ("current", "its epoch")):
        counts = progress[part]
        steps = counts["ready"] * written  # checkpoints are written after a batch's steps
        check(
            steps % steps_per_batch == 0,
            f"--ckpt_path: the checkpoint stopped {steps} steps into {where}, not a multiple of "
            f"data.steps_per_batch={steps_per_batch}; use a divisor of {steps} or "
            "data.steps_per_batch: auto",
        )
        # Keep the lag of the other counters: it tells Lightning whether the checkpoint
        # was written at the end of the batch (completed one behind) or after it.
        ready = steps // steps_per_batch
        for key in ("started", "processed", "completed"):
            counts[key] = ready - (counts["ready"] - counts[key])
        counts["ready"] = ready
    checkpoint["steps_per_batch"] = steps_per_batch
