"""The command line: ``python cli.py fit|validate|test|sweep|transfer|report|slurm|...``.

``COMMANDS`` is the table of subcommands. ``fit``, ``validate`` and ``test`` are
LightningCLI's (``lstm_lightning.fit``); the others take flags from the typed signature
and docstring of the function behind each. Mistakes are printed as one line and exit with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import docstring_parser
from jsonargparse import ActionYesNo, ArgumentError, ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lstm_lightning import carry, coord_check, report, slurm, sweep, tune
from lstm_lightning.config_checks import check_config_files, one_line
from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.fit import EXIT_CONFIG_ERROR, EXIT_DIVERGED, build_cli, summary
from lstm_lightning.requeue import Requeued
from lstm_lightning.resume import Interrupted

__all__ = ["COMMANDS", "EXIT_CONFIG_ERROR", "EXIT_DIVERGED", "main", "run_command"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class Command(NamedTuple):
    function: Callable[..., int] | None  # None: LightningCLI's (fit.build_cli)
    help: str


COMMANDS: dict[str, Command] = {
    "fit": Command(None, "Train one model: fit --config configs/lstm.yaml"),
    "validate": Command(None, "Score a checkpoint on the val split: validate --ckpt_path"),
    "test": Command(None, "Score a checkpoint on the test split: test --ckpt_path"),
    "sweep": Command(sweep.main, "Run experiment groups, one folder and result per run"),
    "report": Command(report.main, "Summarise a sweep: best lrs, transfer table and plot"),
    "tune": Command(tune.main, "Search hyperparameters with Optuna, one run folder per trial"),
    "transfer": Command(carry.main, "Train a tuned study's best trial at wider widths"),
    "slurm": Command(slurm.main, "Write (and submit) a SLURM array script for a sweep"),
    "slurm-tune": Command(tune.slurm_main, "Write (and submit) a SLURM array of tune processes"),
    "coord-check": Command(coord_check.main, "Activation sizes against width, SP and muP"),
}


def usage() -> str:
    """Every subcommand with its line, as ``cli.py --help`` prints it."""
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(
        [
            "usage: python cli.py SUBCOMMAND [--help] [flags]",
            "",
            "subcommands:",
            *rows,
            "",
            "cli.py SUBCOMMAND --help lists its flags; --debug shows tracebacks.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = list(sys.argv[1:] if from_shell else argv)
    debug = "--debug" in argv or os.environ.get("LSTM_LIGHTNING_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if from_shell:  # LightningCLI reads sys.argv itself; hand it the flags without --debug
        sys.argv[1:] = argv
    command = argv[0] if argv else None
    if command in ("-h", "--help"):
        print(usage())
        return 0
    if command is None:
        print(usage(), file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if command not in COMMANDS:
        print(
            f"error: unknown subcommand {command!r}{did_you_mean(command, COMMANDS)}",
            file=sys.stderr,
        )
        print(usage(), file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        if COMMANDS[command].function is not None:
            return run_command(command, argv[1:])
        return run_lightning(command, argv, from_shell)
    except Requeued:
        return 0  # checkpointed and requeued: the requeued job resumes with --ckpt_path
    except Interrupted as stop:
        return stop.code  # its line is printed
    except SIGTERMException:  # Lightning's stop after the batch (line printed, last.ckpt saved)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(
            "error: interrupted (Ctrl-C): nothing saved since the last checkpoint", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except (ConfigError, ArgumentError, MisconfigurationException) as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def run_lightning(command: str, argv: list[str], from_shell: bool) -> int:
    """fit, validate or test through LightningCLI; a fit ends with its summary line."""
    check_config_files(argv)
    start = time.perf_counter()
    try:
        cli = build_cli(None if from_shell else argv)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):  # Lightning's exit(1) on Ctrl-C
            raise KeyboardInterrupt from None
        raise
    if command == "fit" and cli.trainer.is_global_zero:
        print(summary(cli, time.perf_counter() - start))
    if cli.model.diverged_at_step is not None:
        return EXIT_DIVERGED
    return 0


def run_command(command: str, args: list[str]) -> int:
    """A function-backed subcommand: flags from the typed signature and docstring of the
    function behind it (jsonargparse), like every other key in this project. Booleans are
    plain switches (``--dry_run``, ``--no_dry_run``)."""
    function = COMMANDS[command].function
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
    try:
        namespace = parser.parse_args(args)
    except ArgumentError as err:
        unknown = re.search(r"unrecognized arguments: (--[\w.-]+)", str(err))
        if unknown is None:
            raise
        flags = [f"--{name}" for name in params] + [f"--no_{name}" for name in switches]
        hint = did_you_mean(unknown.group(1), flags) or f" (the flags: {', '.join(flags)})"
        message = f"cli.py {command}: unknown flag {unknown.group(1)}{hint}"
        raise ArgumentError(None, message) from None
    return function(**namespace.as_dict())
