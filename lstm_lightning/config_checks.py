"""Checks on a command line and a config before a run is built: the ``--config`` files
themselves, a fit that would do nothing or never end, checkpoints that would land beside
another run's, and the parser's errors folded into one line with near matches.
"""

from __future__ import annotations

import inspect
import os
import re
import sys

import yaml

from lstm_lightning import ranges
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError, check, did_you_mean
from lstm_lightning.module import LanguageModel
from lstm_lightning.resume import is_tensorboard

__all__ = ["check_checkpoint_folder", "check_config_files", "check_run", "known_keys", "one_line"]


def check_config_files(argv: list[str]) -> None:
    """Name the file when a ``--config`` is missing or not YAML (the parser would not)."""
    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        if os.path.isdir(path):
            raise ConfigError(f"--config: {path} is a folder; give a YAML file")
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
        check(
            content is not None,
            f"--config: {path} is empty; give it trainer:, model: and data: keys "
            "(see configs/lstm.yaml)",
        )
        if not isinstance(content, dict):
            raise ConfigError(
                f"--config: {path} must hold a mapping of keys "
                f"(trainer:, model:, data:), got a {type(content).__name__}"
            )


def one_line(err: Exception) -> str:
    """Fold a (possibly multi-line) parser error into one line, with near matches."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    text = ranges.explain(re.sub(r"\s+", " ", text))  # a range type's rule, as one line
    return text + suggestion(text)


def suggestion(text: str) -> str:
    """' (did you mean ...?)' for an unknown key, from the keys the parser knows."""
    match = re.search(
        r"(?:unrecognized arguments|does not accept (?:nested key|option)|No action for "
        r"key)\W+['\"]?(?:--)?([\w.]+)",
        text,
    )
    return did_you_mean(match.group(1), known_keys()) if match else ""


def known_keys() -> list[str]:
    """Every model and data key, as ``model.hidden_size``."""
    sections = (("model", LanguageModel), ("data", SequenceDataModule))
    return [f"{name}.{key}" for name, cls in sections for key in inspect.signature(cls).parameters]


def check_run(config, subcommand: str | None) -> None:
    """Refuse a fit that would do nothing, run forever or never reach its learning rate;
    warn about one that would never validate."""
    if subcommand != "fit":
        return
    trainer, steps = config.trainer, config.trainer.max_steps
    check(steps != 0, "trainer.max_steps=0 trains nothing; set the number of steps to take")
    check(
        steps > 0 or trainer.max_epochs is not None or trainer.max_time is not None,
        ("trainer.max_steps is not set" if steps == -1 else f"trainer.max_steps={steps}")
        + ", so Lightning would train for 1000 epochs; pass a config (--config "
        "configs/lstm.yaml) or set --trainer.max_steps",
    )
    warmup = config.model.warmup_steps
    check(
        steps < 0 or warmup <= steps,
        f"model.warmup_steps={warmup} is above trainer.max_steps={steps}: the learning rate "
        f"would never reach model.learning_rate; use at most {steps} warm-up steps",
    )
    check_checkpoint_folder(config)
    interval = trainer.val_check_interval
    if steps > 0 and isinstance(interval, int) and interval > steps:
        print(
            f"warning: trainer.val_check_interval={interval} is above trainer.max_steps="
            f"{steps}: this run will not validate",
            file=sys.stderr,
        )


def check_checkpoint_folder(config) -> None:
    """Refuse a fresh fit whose checkpoints would land beside another run's last.ckpt.

    A run's config.yaml names its own folder as ``checkpoint.dirpath``: a fit from it with
    the logger moved elsewhere (to try one change) would write last-v1.ckpt there. Only
    the run's own logger folder may start afresh over its last.ckpt (a sweep's rerun).
    """
    dirpath = config.get("checkpoint") and config.checkpoint.dirpath
    if not dirpath or config.get("ckpt_path") or not os.path.isfile(f"{dirpath}/last.ckpt"):
        return
    logger = config.trainer.logger
    if is_tensorboard(logger) and isinstance(logger.init_args.version, str):
        args = logger.init_args
        logs = os.path.join(args.save_dir, args.name or "", args.version)
        if os.path.realpath(logs) == os.path.realpath(dirpath):
            return
    raise ConfigError(
        f"checkpoint.dirpath {dirpath} holds another run's last.ckpt, and this fit starts "
        "afresh, so its checkpoints would land beside that run's; pass --checkpoint.dirpath "
        "NEW_FOLDER, or --ckpt_path last to continue that run"
    )
