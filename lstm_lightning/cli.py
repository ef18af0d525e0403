"""The command line: ``python cli.py fit|validate|test|sweep|report|slurm|coord-check``.

``fit``, ``validate`` and ``test`` are LightningCLI's (``lstm_lightning.fit``); the other
subcommands take flags from the typed signature and docstring of the function behind
each. Mistakes are printed as one line and exit with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys

from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lstm_lightning.errors import ConfigError
from lstm_lightning.fit import (
    EXIT_CONFIG_ERROR,
    EXIT_DIVERGED,
    build_cli,
    check_config_files,
    one_line,
)
from lstm_lightning.requeue import Requeued

__all__ = ["EXIT_CONFIG_ERROR", "EXIT_DIVERGED", "main", "run_command"]


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
