"""The command line: ``python cli.py fit|validate|test --config configs/lstm.yaml``.

Built on LightningCLI, so every ``__init__`` argument of ``LanguageModel`` and
``SequenceDataModule`` is a config key and a flag (``--model.hidden_size 256``), with its
docstring in ``--help``. Mistakes are printed as one line, with near matches for an
unknown key, and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import time
import warnings

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lstm_lightning.data import SequenceDataModule, resolve_steps_per_batch
from lstm_lightning.errors import ConfigError, check
from lstm_lightning.module import LanguageModel
from lstm_lightning.requeue import Requeued, RequeueOnSignal

# Lightning 2.6 warns on every fit about its own use of torch's pytree API.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# It compares log_every_n_steps, a count of steps here, with an epoch's Lightning batches,
# which hold data.steps_per_batch steps each: the hint would be wrong.
warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
# Under manual optimization ModelCheckpoint warns that it saves after the optimizer step:
# automatic optimization saves there too.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3


class LSTMLightningCLI(LightningCLI):
    """LightningCLI with our links and defaults: TensorBoard under runs/, last.ckpt."""

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

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        if config.get("enable_progress_bar") is not False:
            rate = self._get(self.config_init, "progress_refresh_rate")
            callbacks = [*callbacks, StepProgressBar(refresh_rate=rate)]
        if SLURMEnvironment.detect() and not config.get("plugins"):
            # Our callback checkpoints between steps on SIGUSR1 (see requeue.py), in place
            # of Lightning's handler, which checkpoints in the middle of one.
            config["plugins"] = [SLURMEnvironment(auto_requeue=False)]
            callbacks = [*callbacks, RequeueOnSignal()]
        trainer = super()._instantiate_trainer(config, callbacks)
        # Lightning clips only under automatic optimization; the model clips in its own steps.
        self.model.gradient_clip_val, trainer.gradient_clip_val = trainer.gradient_clip_val, None
        if self.subcommand in (None, "fit"):
            fuse_steps(trainer, self.datamodule, self._get(self.config, "ckpt_path"))
        return trainer


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps, however many steps a Lightning batch holds
    (``steps_per_batch``, set by the CLI), and redraws every ``refresh_rate`` of them but
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


def fuse_steps(trainer: Trainer, data: SequenceDataModule, ckpt_path: str | None) -> None:
    """Resolve ``data.steps_per_batch`` (K) and make the settings that Lightning counts in
    batches count batches of K steps, so that every setting keeps its meaning in steps.

    ``max_steps``, ``log_every_n_steps`` and ``every_n_train_steps`` need no change: the
    model counts ``global_step`` and Lightning's logging counter per step.
    ``val_check_interval`` and ``limit_train_batches`` are divided by K.
    """
    check(
        trainer.accumulate_grad_batches == 1,
        "trainer.accumulate_grad_batches is not supported (each training batch takes its own "
        "optimizer steps); raise data.batch_size instead",
    )
    for callback in trainer.checkpoint_callbacks:
        check(
            callback._train_time_interval is None,
            "checkpoint.train_time_interval is not supported (Lightning ignores it under manual "
            "optimization); use checkpoint.every_n_train_steps",
        )
    counts, only_one = step_counts(trainer, data, ckpt_path)
    k = resolve_steps_per_batch(data.hparams.steps_per_batch, counts, only_one)
    data.steps_per_batch = k
    if isinstance(trainer.progress_bar_callback, StepProgressBar):
        trainer.progress_bar_callback.steps_per_batch = k
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


def train_steps(trainer: Trainer, data: SequenceDataModule) -> int:
    """Optimizer steps in one training epoch, ``trainer.limit_train_batches`` applied."""
    steps, limit = data.train_steps_per_epoch(), trainer.limit_train_batches
    return min(steps, limit) if isinstance(limit, int) else int(steps * limit)


def step_counts(
    trainer: Trainer, data: SequenceDataModule, ckpt_path: str | None
) -> tuple[dict[str, int], str | None]:
    """Every count of optimizer steps that must fall on a batch edge, by name, and why a
    batch can hold only one step (or None)."""
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
        if callback._every_n_train_steps > 0:
            counts["checkpoint.every_n_train_steps"] = callback._every_n_train_steps
    if trainer.max_steps > epoch:  # the run crosses an epoch's end
        counts["the steps of a training epoch"] = epoch
    if ckpt_path is not None and os.path.isfile(ckpt_path):
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
        counts["the checkpoint's step (--ckpt_path)"] = checkpoint.get("global_step", 0)
    return counts, None


def build_cli(
    args: list[str] | None = None, run: bool = True, save_config: bool = True
) -> LSTMLightningCLI:
    """The CLI object; ``run=False`` parses and instantiates without running (tests).

    The sweep passes ``save_config=False``: it has already written the run's config.yaml,
    atomically.
    """
    return LSTMLightningCLI(
        LanguageModel,
        SequenceDataModule,
        seed_everything_default=0,
        args=args,
        run=run,
        parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        save_config_callback=SaveConfigCallback if save_config else None,
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
            parser_kwargs={"exit_on_error": False},
        )
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = list(sys.argv[1:] if from_shell else argv)
    debug = "--debug" in argv or os.environ.get("LSTM_LIGHTNING_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if from_shell:  # LightningCLI reads sys.argv itself; hand it the flags without --debug
        sys.argv[1:] = argv
    command = argv[0] if argv else None
    try:
        if command in ("sweep", "report", "slurm", "coord-check"):
            return run_command(command, argv[1:])
        check_config_files(argv)
        cli = build_cli(None if from_shell else argv)
    except Requeued:
        return 0  # checkpointed and requeued: the requeued job resumes with --ckpt_path
    except (ConfigError, ArgumentError, MisconfigurationException) as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if cli.model.diverged_at_step is not None:
        return EXIT_DIVERGED
    return 0


def run_command(command: str, args: list[str]) -> int:
    """``sweep`` and ``report``: flags from the typed signature and docstring of the
    function behind each (jsonargparse), like every other key in this project. Booleans
    are plain switches (``--dry_run``, ``--no_dry_run``)."""
    import importlib
    import inspect

    import docstring_parser
    from jsonargparse import ActionYesNo, ArgumentParser

    function = importlib.import_module(f"lstm_lightning.{command.replace('-', '_')}").main
    params = inspect.signature(function).parameters
    switches = [name for name, p in params.items() if p.annotation in (bool, "bool")]
    parser = ArgumentParser(
        prog=f"cli.py {command}", exit_on_error=False, description=function.__doc__.split("\n")[0]
    )
    parser.add_function_arguments(function, as_group=False, skip=set(switches))
    docs = {p.arg_name: p.description for p in docstring_parser.parse(function.__doc__).params}
    for name in switches:
        parser.add_argument(
            f"--{name}", action=ActionYesNo, default=params[name].default, help=docs.get(name)
        )
    return function(**parser.parse_args(args).as_dict())


def check_config_files(argv: list[str]) -> None:
    """Name the file when a ``--config`` is missing or not YAML (the parser would not)."""
    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        if not os.path.isfile(path):
            raise ConfigError(f"--config: {path} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except UnicodeDecodeError:
            raise ConfigError(f"--config: {path} is not UTF-8 text") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise ConfigError(f"--config: {path} is not valid YAML: {problem}{at}") from None
        if content is not None and not isinstance(content, dict):
            raise ConfigError(
                f"--config: {path} must hold a mapping of keys "
                f"(trainer:, model:, data:), got a {type(content).__name__}"
            )


def one_line(err: Exception) -> str:
    """Fold a (possibly multi-line) parser error into one line, with near matches."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    text = re.sub(r"\s+", " ", text)
    return text + suggestion(text)


def suggestion(text: str) -> str:
    """' (did you mean ...?)' for an unknown key, from the keys the parser knows."""
    match = re.search(
        r"(?:unrecognized arguments|does not accept (?:nested key|option)|No action for "
        r"key)\W+['\"]?(?:--)?([\w.]+)",
        text,
    )
    if not match:
        return ""
    key = match.group(1)
    known = known_keys()
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [
            k
            for k in known
            if k.rsplit(".", 1)[-1]
            in difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in known], n=3)
        ]
    return f" (did you mean {', '.join(close[:3])}?)" if close else ""


def known_keys() -> list[str]:
    import inspect

    keys = []
    for section, cls in (("model", LanguageModel), ("data", SequenceDataModule)):
        keys += [f"{section}.{name}" for name in inspect.signature(cls).parameters]
    return keys
