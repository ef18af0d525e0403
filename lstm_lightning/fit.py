"""The command line: ``python cli.py fit|validate|test --config configs/lstm.yaml``.

Built on LightningCLI, so every ``__init__`` argument of ``LanguageModel`` and
``SequenceDataModule`` is a config key and a flag (``--model.hidden_size 256``), with its
docstring in ``--help``. Mistakes are printed as one line, with near matches for an
unknown key, and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings

import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError
from lstm_lightning.fused import StepProgressBar, fuse_steps
from lstm_lightning.module import LanguageModel
from lstm_lightning.ranges import restriction_words
from lstm_lightning.requeue import RequeueOnSignal

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
    text = restriction_words(re.sub(r"\s+", " ", text))  # a range in the classes' words
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
