"""The command line: ``python cli.py fit|validate|test --config configs/lstm.yaml``.

Built on LightningCLI, so every ``__init__`` argument of ``LanguageModel`` and
``SequenceDataModule`` is a config key and a flag (``--model.hidden_size 256``), with its
docstring in ``--help``. Mistakes are printed as one line, with near matches for an
unknown key, and exit with status 2; ``--debug`` shows the traceback instead.

A fit writes ``last.ckpt`` every ``checkpoint.every_n_train_steps`` steps and at its end.
Ctrl-C or SIGTERM stops it at the end of the current step, saves ``last.ckpt`` and exits
130 or 143 (``Interrupted``); the same command with ``--ckpt_path last`` continues the run
in its folder, with the losses of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lstm_lightning import checkpoints
from lstm_lightning.config_checks import check_run
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.files import write_atomic
from lstm_lightning.fused import FusedSteps, StepProgressBar, resumed_counts
from lstm_lightning.module import LanguageModel
from lstm_lightning.requeue import RequeueOnSignal
from lstm_lightning.resume import (
    LastAtEnd,
    StopOnSignal,
    check_same_model,
    find_last,
    is_tensorboard,
    read_checkpoint,
)

EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3

# last.ckpt every this many steps unless the config says otherwise. It must be a multiple
# of data.steps_per_batch: 1000 = 2^3 * 5^3 keeps every K that auto picks for the
# configs (10 for configs/lstm.yaml) and 8; it divides the round step counts people use
# (1000, 5000, 10000), so the last periodic save falls on the last step; and it bounds
# the loss of a killed run to minutes at the widths of this study.
CHECKPOINT_EVERY = 1000

# Warnings that are wrong here or that no user asked for, hidden by ``quiet``.
NOISE = (
    # Lightning 2.6 warns on every fit about its own use of torch's pytree API.
    r".*isinstance\(treespec, LeafSpec\)",
    # It compares log_every_n_steps, a count of steps here, with an epoch's Lightning
    # batches, which hold data.steps_per_batch steps each: the hint would be wrong.
    r"The number of training batches .* logging interval",
    # Under manual optimization ModelCheckpoint warns that it saves after the optimizer
    # step: automatic optimization saves there too.
    "Using ModelCheckpoint with manual optimization",
    # "...your dataloader is not resumable": ours is. The sampler reads its epoch and its
    # position in it from the trainer's progress (data.py), so a resumed run draws the
    # batches an uninterrupted one would (tests/test_resume.py checks the losses).
    "You're resuming from a checkpoint that ended before the epoch ended",
    # validate/test, or a fit resumed into a new folder, from another run's checkpoint:
    # ModelCheckpoint notes it will not track that run's best checkpoints (none are kept).
    "The dirpath has changed from",
)


# The loggers of rank_zero_info (the litlogger tip) and of seed_everything.
LOGGERS = ("pytorch.utilities.rank_zero", "fabric.utilities.seed")


class _NoTip(logging.Filter):
    """Drops Lightning's advertisement for its litlogger service, printed on every fit, and
    its "Seed set to 0", printed before a config error's one line (the seed is in the
    run's config.yaml)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.match(r".*litlogger|Seed set to", record.getMessage(), re.S)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within: Lightning's and torchmetrics' noise hidden, everything else shown.

    The one place that decides what a user is not shown; ``build_cli`` runs inside it, and
    any runner that drives Lightning itself can use it too. Filters apply only within.
    """
    with warnings.catch_warnings():
        for message in NOISE:
            warnings.filterwarnings("ignore", message=message)
        if "SLURM_JOB_ID" not in os.environ:  # outside a SLURM job the srun hint is wrong
            warnings.filterwarnings("ignore", message="The `srun` command is available")
        # A NaN loss is reported by the model in one line; torchmetrics would warn per step.
        warnings.filterwarnings("once", message="Encountered `nan` values in tensor")
        logs = [logging.getLogger(f"lightning.{name}") for name in LOGGERS]
        tip = _NoTip()
        for log in logs:
            log.addFilter(tip)
        try:
            yield
        finally:
            for log in logs:
                log.removeFilter(tip)


class LSTMLightningCLI(LightningCLI):
    """LightningCLI with our links and defaults (TensorBoard under runs/, a periodic
    last.ckpt), the checks of a run before it is built, and ``--ckpt_path last``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments(
            "data.batching",
            "model.carry_state",
            compute_fn=lambda batching: batching == "contiguous",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "checkpoint.every_n_train_steps": CHECKPOINT_EVERY,
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": "lstm", "default_hp_metric": False},
                },
            }
        )
        parser.add_argument(
            "--progress_refresh_rate",
            type=int,
            default=20,
            help="Redraw the progress bar every N steps, at most twice a second (a redraw "
            "costs more than a narrow LSTM step).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check the run and its ``--ckpt_path`` before anything is built or
        written (LightningCLI next reads the checkpoint's model keys into the config)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(str(subcommand), self.config)
        check_run(config, subcommand)
        if "weights_only" in config and config.weights_only is None:
            # Lightning would unpickle --ckpt_path in full: no code in a checkpoint runs.
            config.weights_only = True
        self.resume: dict = {}  # logger settings a fit resumed from a checkpoint needs
        self.resumed: dict | None = None  # the checkpoint's counts K must divide (fused.py)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            if subcommand in ("validate", "test"):  # legitimate (the loss at init), rarely meant
                print(
                    f"note: {subcommand} without --ckpt_path scores the model as initialised, "
                    "untrained; --ckpt_path PATH (or last) scores a trained one",
                    file=sys.stderr,
                )
            return
        if ckpt_path == "last":
            ckpt_path, self.resume = find_last(config)
            config.ckpt_path = ckpt_path
        if checkpoints.left_to_lightning(ckpt_path):  # hpc, registry, a URL: Lightning's
            return
        checkpoint = read_checkpoint(ckpt_path)
        check_same_model(config, checkpoint, ckpt_path, subcommand)
        self.resumed = resumed_counts(checkpoint)
        logger = config.trainer.logger
        if subcommand == "fit" and is_tensorboard(logger) and logger.init_args.purge_step is None:
            # A resume in the run's folder would log the steps after the checkpoint twice:
            # TensorBoard drops the earlier event file's steps after the checkpoint's.
            self.resume["purge_step"] = checkpoint.get("global_step", 0) + 1

    def instantiate_classes(self) -> None:
        """Build the run; a resumed fit's logger continues its folder (``self.resume``)."""
        if not getattr(self, "resume", None):
            super().instantiate_classes()
            return
        config = self.config.get(str(self.subcommand), self.config)
        args = config.trainer.logger.init_args
        saved = {key: args[key] for key in self.resume}
        for key, value in self.resume.items():
            args[key] = value
        super().instantiate_classes()
        for key, value in saved.items():  # the saved config.yaml stays the run's own
            args[key] = value
        if "version" in self.resume:  # continued in place: its config.yaml, rewritten at
            config.ckpt_path = None  # setup, reproduces the whole run (config_init resumes)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        settings = self.config_init.get(str(self.subcommand), self.config_init)
        if config.get("enable_checkpointing") is False:  # then checkpoint: goes unused
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        if config.get("enable_progress_bar") is not False:
            rate = settings.get("progress_refresh_rate")
            callbacks = [*callbacks, StepProgressBar(refresh_rate=rate)]
        fused = FusedSteps() if self.subcommand in (None, "fit") else None
        if fused is not None:  # resolved again in its setup, with the fit's checkpoint
            callbacks = [*callbacks, fused]
        if SLURMEnvironment.detect() and not config.get("plugins"):
            # Our callback checkpoints between steps on SIGUSR1 (see requeue.py), in place
            # of Lightning's handler, which checkpoints in the middle of one.
            config["plugins"] = [SLURMEnvironment(auto_requeue=False)]
            callbacks = [*callbacks, RequeueOnSignal()]
        trainer = super()._instantiate_trainer(config, callbacks)
        # Lightning clips only under automatic optimization; the model clips in its own steps.
        self.model.gradient_clip_val, trainer.gradient_clip_val = trainer.gradient_clip_val, None
        if fused is not None:  # refuse a K that cannot keep the settings before a file is written
            fused.fuse(trainer, self.datamodule, self.resumed)
        return trainer


class SaveRunConfig(SaveConfigCallback):
    """Lightning's config saver, written atomically into the logger's folder, and not at
    all without a logger: Lightning's folder then is the working one, where config.yaml
    would overwrite the user's own file (a checkpoint keeps the hyperparameters anyway)."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if self.save_to_log_dir and not self.already_saved:
            log_dir = trainer.log_dir if trainer.loggers else None  # broadcasts: every rank
            if log_dir is not None and trainer.is_global_zero:
                text = self.parser.dump(self.config, skip_none=False)
                write_atomic(os.path.join(log_dir, self.config_filename), text)
            self.save_to_log_dir = False  # Lightning's own setup does the rest
        super().setup(trainer, pl_module, stage)


def build_cli(
    args: list[str] | None = None, run: bool = True, save_config: bool = True
) -> LSTMLightningCLI:
    """The CLI object; ``run=False`` parses and instantiates without running (tests).

    The sweep passes ``save_config=False``: it has already written the run's config.yaml,
    atomically.
    """
    with quiet():
        return LSTMLightningCLI(
            LanguageModel,
            SequenceDataModule,
            seed_everything_default=0,
            trainer_defaults={"callbacks": [StopOnSignal(), LastAtEnd()]},
            args=args,
            run=run,
            parser_kwargs={"exit_on_error": False},
            save_config_callback=SaveRunConfig if save_config else None,
            # The optimizer and schedule are model.optimizer and model.schedule (muP sets
            # them per parameter group): LightningCLI's --optimizer would bypass muP.
            auto_configure_optimizers=False,
        )


class _ParseOnly(LSTMLightningCLI):
    """Build nothing and seed nothing: the sweep only wants the parser."""

    def _set_seed(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def parser_only():
    """The parser ``cli.py fit`` uses, to validate and resolve configs without running."""
    with warnings.catch_warnings():  # args=[] beside sys.argv is intended here
        warnings.simplefilter("ignore", UserWarning)
        cli = _ParseOnly(
            LanguageModel,
            SequenceDataModule,
            seed_everything_default=0,
            args=[],
            run=False,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
        )
    return cli.parser


def summary(cli: LSTMLightningCLI, seconds: float) -> str:
    """One line at the end of a fit: where, how far, how good, how long."""
    trainer, metrics = cli.trainer, cli.trainer.callback_metrics
    parts = [f"{trainer.global_step} steps"]
    if cli.model.diverged_at_step is not None:
        parts.append(f"diverged at step {cli.model.diverged_at_step}")
    if "val/loss" in metrics:
        loss = f"val/loss {float(metrics['val/loss']):.4f}"
        if "val/loss_floor" in metrics:
            loss += f" (floor {float(metrics['val/loss_floor']):.4f})"
        parts.append(loss)
    else:
        parts.append("no validation")
    minutes, secs = divmod(round(seconds), 60)
    parts.append(f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")
    return f"done: {trainer.log_dir or trainer.default_root_dir}: {', '.join(parts)}"
