"""Issue 11's bad inputs, as a table: each row is one case of the issue (its id names the
item), the command, the files it needs, the exit code and the ONE line it must print.

Every row asserts: the exit code; exactly one non-empty stderr line (``warn`` rows: one
``warning:`` line, and the command goes on), matching the row's pattern; no "Traceback"
anywhere in the output; and nothing half-written (the paths a row names as ``absent``,
and for a refused fit no run folder at all). Runs are in-process (``cli.main``); rows that
train are tiny (seconds), the slower ones are marked ``slow``.
"""

from __future__ import annotations

import io
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_lightning.cli import main, usage
from tests.conftest import Project, group, run_cli, signal_at, tiny_args


@dataclass
class Case:
    """One row: ``argv(t)`` and ``setup(t)`` get the row's ``Where`` (paths, project)."""

    id: str
    argv: Callable[[Where], list[str]]
    code: int
    line: str  # a regex searched in the one stderr line
    setup: Callable[[Where], object] = lambda t: None
    warn: bool = False  # a warning line, and the command goes on
    usage: bool = False  # the line, then the list of subcommands (cli.usage)
    absent: Callable[[Where], list[Path]] = lambda t: []
    slow: bool = False
    fresh: bool = False  # in a new interpreter: Lightning's own log lines count too
    then: Callable[[Where], object] = lambda t: None  # more checks once it ran


@dataclass
class Where:
    tmp: Path
    project: Project = field(init=False)

    def __post_init__(self) -> None:
        self.project = Project(self.tmp)

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def npy(self, name: str, array: np.ndarray) -> str:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return self.file(name, buffer.getvalue())

    def fit(self, *extra: str, steps: int = 4, command: str = "fit") -> list[str]:
        return [command, *tiny_args(self.tmp, *extra, steps=steps)]

    def tokens(self, path: str, *extra: str) -> list[str]:
        return self.fit("--data.source", "tokens", "--data.path", path, *extra)

    def sweep(self, *extra: str) -> list[str]:
        return self.project.args(*extra)

    def runs(self, *parts: str) -> Path:
        return self.project.runs.joinpath(*parts)

    def defs(self, *runs: tuple[str, dict]) -> None:
        self.project.defs(group("g", *runs))


def _checkpoint(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class Planted:
    """Unpickling this creates ``marker``: the stand-in for code planted in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(t: Where) -> str:
    payload = {"state_dict": {}, "global_step": 0, "payload": Planted(t.tmp / "executed")}
    return t.file("planted.ckpt", _checkpoint(payload))


def _trained(t: Where) -> None:
    """A completed sweep of the project (runs g/a and g/b), its output read away."""
    assert main(t.sweep("--workers", "1")) == 0


def _fit_run(t: Where) -> Path:
    assert main(t.fit()) == 0
    return t.tmp / "runs" / "lstm" / "version_0"


def _garbage_result(t: Where) -> None:
    t.runs("g", "a").mkdir(parents=True)
    t.runs("g", "a", "result.json").write_text("{not json")


def _truncated_ckpt(t: Where) -> None:
    _trained(t)
    last = t.runs("g", "a", "last.ckpt")
    last.write_bytes(last.read_bytes()[:1000])
    t.runs("g", "a", "result.json").unlink()


def _folder_is_a_file(t: Where) -> None:
    t.runs("g").mkdir(parents=True)
    t.runs("g", "a").write_text("a file where the run's folder should be")


def _status(t: Where, label: str, status: str) -> None:
    assert t.project.result("g", label)["status"] == status


def _changed_config(t: Where) -> None:
    _trained(t)
    t.defs(("a", {"learning_rate": 0.03}), ("b", {"hidden_size": 24}))


TEXT = ["--data.source", "text", "--data.path"]
# A refused fit leaves no run folder, and no config.yaml or lightning_logs where it ran.
NO_RUN = [lambda t: [t.tmp / "runs", t.tmp / "config.yaml", t.tmp / "lightning_logs"]]

CASES = [
    # --- the usual ---------------------------------------------------------------------
    Case(
        "usual: unknown key (flag)",
        lambda t: t.fit("--model.hiden_size", "8"),
        2,
        r"^error: .*--model\.hiden_size.*did you mean model\.hidden_size",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: unknown key (config file)",
        lambda t: t.fit("--config", t.file("typo.yaml", b"model:\n  learning_rat: 0.1\n")),
        2,
        r"^error: .*learning_rat.*did you mean model\.learning_rate",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: wrong type",
        lambda t: t.fit("--model.hidden_size", "abc"),
        2,
        r"^error: .*model\.hidden_size.*abc",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: out of range",
        lambda t: t.fit("--model.learning_rate", "-1"),
        2,
        r"^error: .*model\.learning_rate must be >= 0",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: missing config file",
        lambda t: t.fit("--config", str(t.tmp / "missing.yaml")),
        2,
        r"^error: .*missing\.yaml does not exist",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: --config a folder",
        lambda t: t.fit("--config", str(t.tmp)),
        2,
        r"^error: --config: .* is a folder; give a YAML file",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: malformed YAML",
        lambda t: t.fit("--config", t.file("bad.yaml", b"model: [1,\n")),
        2,
        r"^error: .*bad\.yaml is not valid YAML.*line 2",
        absent=NO_RUN[0],
    ),
    Case(
        "usual: sweep override unknown key",
        lambda t: t.sweep(),
        2,
        r"^error: .*g/a.*learnig_rate.*did you mean learning_rate",
        setup=lambda t: t.defs(("a", {"learnig_rate": 0.1})),
        absent=lambda t: [t.runs("g")],
    ),
    Case(
        "usual: sweep override wrong type",
        lambda t: t.sweep(),
        2,
        r"^error: .*g/a.*hidden_size.*abc",
        setup=lambda t: t.defs(("a", {"hidden_size": "abc"})),
        absent=lambda t: [t.runs("g")],
    ),
    Case(
        "usual: sweep unknown group",
        lambda t: t.sweep("--experiments", "GG"),
        2,
        r"^error: .*GG.*did you mean G\b",
        absent=lambda t: [t.runs()],
    ),
    Case(
        "usual: sweep unknown flag",
        lambda t: t.sweep("--dry_rnu"),
        2,
        r"^error: cli\.py sweep: unknown flag --dry_rnu \(did you mean --dry_run",
    ),
    Case(
        "usual: sweep missing --config",
        lambda t: [*t.sweep()[:1], "--config", str(t.tmp / "nope.yaml"), *t.sweep()[3:]],
        2,
        r"^error: .*nope\.yaml does not exist",
        absent=lambda t: [t.runs()],
    ),
    # --- 11.1: a genuinely changed config is refused, cli.py slurm notices it too -----------
    Case(
        "11.1 changed config refused (sweep)",
        lambda t: t.sweep(),
        2,
        r"^error: .*g/a\)?: its config changed since it ran.*learning_rate 0\.02 -> 0\.03",
        setup=_changed_config,
        slow=True,
    ),
    Case(
        "11.1 changed config refused (slurm, before queueing)",
        lambda t: ["slurm", *t.sweep()[1:], "--total_jobs", "2"],
        2,
        r"^error: .*g/a: its config changed since it ran",
        setup=_changed_config,
        absent=lambda t: [t.runs("slurm")],
        slow=True,
    ),
    # --- 11.2: a stopped fit says so in one line, exits 128 + the signal ------------------
    Case(
        "11.2 fit stopped by SIGTERM",
        lambda t: t.fit(*signal_at(4, signal.SIGTERM), steps=8),
        143,
        r"stopped by SIGTERM at step 4: saved .*last\.ckpt; the same command with --ckpt_path last",
        then=lambda t: (t.tmp / "runs" / "lstm" / "version_0" / "checkpoints" / "last.ckpt").stat(),
    ),
    Case(
        "11.2 fit stopped by Ctrl-C (SIGINT)",
        lambda t: t.fit(*signal_at(4, signal.SIGINT), steps=8),
        130,
        r"stopped by SIGINT at step 4: saved .*last\.ckpt",
    ),
    # --- 11.6: a planted pickle is refused, not run ----------------------------------------
    Case(
        "11.6 planted pickle (fit --ckpt_path)",
        lambda t: t.fit("--ckpt_path", _plant(t)),
        2,
        r"^error: --ckpt_path: .*planted\.ckpt holds a Python object",
        absent=lambda t: [t.tmp / "executed", t.tmp / "runs"],
    ),
    Case(
        "11.6 planted pickle (validate --ckpt_path)",
        lambda t: t.fit("--ckpt_path", _plant(t), command="validate"),
        2,
        r"^error: --ckpt_path: .*planted\.ckpt holds a Python object",
        absent=lambda t: [t.tmp / "executed", t.tmp / "runs"],
    ),
    # --- 11.7: a fault in a run's folder stays in that run ----------------------------------
    Case(
        "11.7 garbage result.json (sweep --dry_run)",
        lambda t: t.sweep("--dry_run"),
        0,
        r"",  # the dry run's table names the file on stdout; nothing on stderr
        setup=_garbage_result,
    ),
    Case(
        "11.7 garbage result.json (sweep): named, left, the others run",
        lambda t: t.sweep("--workers", "1"),
        1,
        r"g/a: left as it is: .*g/a/result\.json is unreadable \(not valid JSON",
        setup=_garbage_result,
        then=lambda t: _status(t, "b", "completed"),
        slow=True,  # also in tests/test_faults.py
    ),
    Case(
        "11.7 run folder cannot be written (sweep): fails only its run",
        lambda t: t.sweep("--workers", "1"),
        1,
        r"failed +g/a: cannot write into .*g/a",
        setup=_folder_is_a_file,
        then=lambda t: _status(t, "b", "completed"),
        slow=True,  # also in tests/test_faults.py
    ),
    Case(
        "11.7 a folder where config.yaml should be (sweep): named, fails only its run",
        lambda t: t.sweep("--workers", "1"),
        1,
        r"failed +g/a: cannot read .*g/a/config\.yaml \(Is a directory\)",
        setup=lambda t: t.runs("g", "a", "config.yaml").mkdir(parents=True),
        then=lambda t: _status(t, "b", "completed"),
    ),
    Case(
        "11.7 truncated checkpoint (sweep)",
        lambda t: t.sweep("--labels", "a", "--workers", "1"),
        1,
        r"failed +g/a: .*g/a/last\.ckpt is not a readable checkpoint",
        setup=_truncated_ckpt,
        slow=True,
    ),
    # --- 11.8: tracebacks before --------------------------------------------------------------
    Case(
        "11.8 sweep --config not YAML",
        lambda t: t.sweep(),
        2,
        r"^error: --config: .*base\.yaml is not valid YAML",
        setup=lambda t: t.project.config.write_text("trainer: [unclosed\n"),
        absent=lambda t: [t.runs()],
    ),
    Case(
        "11.8 sweep --config a YAML list",
        lambda t: t.sweep(),
        2,
        r"^error: --config: .*base\.yaml must hold a mapping of keys",
        setup=lambda t: t.project.config.write_text("- a\n- b\n"),
        absent=lambda t: [t.runs()],
    ),
    Case(
        "11.8 empty .npy",
        lambda t: t.tokens(t.npy("empty.npy", np.zeros(0, np.uint16))),
        2,
        r"^error: data\.path: .*empty\.npy .*(is empty|holds no token ids)",
        absent=NO_RUN[0],
    ),
    Case(
        "11.8 huge stray token id without data.vocab_size",
        lambda t: t.tokens(t.npy("huge.npy", np.array([1, 2, 3, 2**40] * 500, np.int64))),
        2,
        r"^error: .*huge\.npy.*1099511627776.*data\.vocab_size",
        absent=NO_RUN[0],
    ),
    Case(
        "11.8 sweep --runs_dir names a file",
        lambda t: t.sweep(),
        2,
        r"^error: --runs_dir: .*runs is a file; give a folder",
        setup=lambda t: t.runs().write_text(""),
    ),
    Case(
        "11.8 sweep --runs_dir that cannot be made (refused before any run)",
        lambda t: t.sweep("--runs_dir", t.file("f", b"") + "/runs"),
        2,
        r"^error: --runs_dir: cannot make .*/f/runs: .*/f is not a writable folder",
    ),
    Case(
        "11.8 report --out_dir names a file",
        lambda t: ["report", "--runs_dir", str(t.tmp), "--out_dir", t.file("out", b"x")],
        2,
        r"^error: out_dir .*/out is a file, not a folder",
    ),
    Case(
        "11.8 coord-check --out names a file",
        lambda t: ["coord-check", "--widths", "16,32", "--steps", "1", "--out", t.file("o", b"")],
        2,
        r"^error: .*--out.*/o is a file",
    ),
    Case(
        "11.8 coord-check --out that cannot be made (refused before training)",
        lambda t: (
            ["coord-check", "--widths", "16,32", "--steps", "1", "--seeds", "1"]
            + ["--out", t.file("o", b"") + "/sub"]
        ),
        2,
        r"^error: --out: cannot make .*/o/sub: Not a directory",
    ),
    Case(
        "11.8 --ckpt_path a missing file",
        lambda t: t.fit("--ckpt_path", str(t.tmp / "none.ckpt")),
        2,
        r"^error: --ckpt_path: .*none\.ckpt does not exist",
        absent=NO_RUN[0],
    ),
    Case(
        "11.8 --ckpt_path not a checkpoint",
        lambda t: t.fit("--ckpt_path", t.file("text.ckpt", b"not a checkpoint")),
        2,
        r"^error: --ckpt_path: .*text\.ckpt is not a readable checkpoint",
        absent=NO_RUN[0],
    ),
    Case(
        "11.8 --ckpt_path a torch file that is no checkpoint",
        lambda t: t.fit("--ckpt_path", t.file("list.ckpt", _checkpoint([1, 2]))),
        2,
        r"^error: --ckpt_path: .*list\.ckpt is not a Lightning checkpoint",
        absent=NO_RUN[0],
    ),
    Case(
        "11.8 --ckpt_path truncated checkpoint (fit)",
        lambda t: t.fit("--ckpt_path", t.file("cut.ckpt", _checkpoint({"a": 1})[:100])),
        2,
        r"^error: --ckpt_path: .*cut\.ckpt is not a readable checkpoint",
        absent=NO_RUN[0],
    ),
    # --- 11.9: divergence by a stated rule --------------------------------------------------
    Case(
        "11.9 exploding loss (adam at lr 1e6)",
        lambda t: t.fit("--model.learning_rate", "1e6", steps=20),
        3,
        r"^diverged: train/loss .* at step \d+",
    ),
    Case(
        "11.9 exploding loss in a sweep is recorded diverged",
        lambda t: t.sweep("--workers", "1"),
        0,
        r"^diverged: train/loss is .* at step \d+",
        setup=lambda t: t.defs(("a", {"learning_rate": 1e6})),
        then=lambda t: _status(t, "a", "diverged"),
    ),
    Case(
        "11.9 exploding loss (sgd at lr 1e6)",
        lambda t: t.fit("--model.optimizer", "sgd", "--model.learning_rate", "1e6", steps=20),
        3,
        r"^diverged: train/loss .* at step \d+",
    ),
    Case(
        "11.8 empty .npy, in a fresh process (no log line before the error)",
        lambda t: t.tokens(t.npy("empty.npy", np.zeros(0, np.uint16))),
        2,
        r"^error: data\.path: .*empty\.npy holds no token ids",
        absent=NO_RUN[0],
        fresh=True,
        slow=True,
    ),
    # --- 11.10: settings that do nothing, or not what they say -------------------------------
    Case(
        "11.10 val_check_interval above max_steps",
        lambda t: t.fit("--trainer.val_check_interval", "8"),
        0,
        r"^warning: trainer\.val_check_interval=8 is above trainer\.max_steps=4",
        warn=True,
    ),
    Case(
        "11.10 max_steps 0",
        lambda t: t.fit("--trainer.max_steps", "0"),
        2,
        r"^error: trainer\.max_steps=0 trains nothing",
        absent=NO_RUN[0],
    ),
    Case(
        "11.10 warmup_steps above max_steps",
        lambda t: t.fit("--model.warmup_steps", "5"),
        2,
        r"^error: model\.warmup_steps=5 is above trainer\.max_steps=4",
        absent=NO_RUN[0],
    ),
    Case(
        "11.10 fit with no config",
        lambda t: ["fit"],
        2,
        r"^error: trainer\.max_steps is not set, so Lightning would train",
    ),
    Case(
        "11.10 negative max_steps is named, not called unset",
        lambda t: t.fit("--trainer.max_steps", "-5"),
        2,
        r"^error: trainer\.max_steps=-5, so Lightning would train for 1000 epochs",
        absent=NO_RUN[0],
    ),
    # --- 11.11: the sweep's pre-check sees every run's data and K ----------------------------
    Case(
        "11.11 sweep override: missing data file",
        lambda t: t.sweep(),
        2,
        r"^error: g/b: data\.path: /nonexistent\.txt does not exist",
        setup=lambda t: t.defs(
            ("a", {}), ("b", {"data.source": "text", "data.path": "/nonexistent.txt"})
        ),
        absent=lambda t: [t.runs("g")],
    ),
    Case(
        "11.11 sweep override: impossible steps_per_batch",
        lambda t: t.sweep(),
        2,
        r"^error: g/b: data\.steps_per_batch=3 must divide trainer\.max_steps=8",
        setup=lambda t: t.defs(("a", {}), ("b", {"data.steps_per_batch": 3})),
        absent=lambda t: [t.runs("g")],
    ),
    # --- 11.12: misleading words --------------------------------------------------------------
    Case(
        "11.12 empty config file",
        lambda t: t.fit("--config", t.file("empty.yaml", b"")),
        2,
        r"^error: .*empty\.yaml is empty",
        absent=NO_RUN[0],
    ),
    Case(
        "11.12 split too small names real keys (no train_fraction)",
        lambda t: t.fit(*TEXT, t.file("s.txt", b"ab" * 100)),
        2,
        r"^error: .*the val split has 10 tokens, fewer than the 17(?!.*train_fraction)",
        absent=NO_RUN[0],
    ),
    Case(
        "11.12 corrupt .npy (no word of pickles)",
        lambda t: t.tokens(t.file("bad.npy", b"\x93NUMPY\x01\x00garbage" * 4)),
        2,
        r"^error: data\.path: .*bad\.npy(?!.*pickle)",
        absent=NO_RUN[0],
    ),
    Case(
        "11.12 NaN from output_mult names it",
        lambda t: t.fit("--model.output_mult", "1e38", steps=8),
        3,
        r"^diverged: .*output_mult",
    ),
    Case(
        "11.12 --definitions a folder",
        lambda t: [*t.sweep(), "--definitions", str(t.tmp)],
        2,
        r"^error: --definitions: .* is a (folder|directory)",
        absent=lambda t: [t.runs()],
    ),
    Case(
        "11.12 validate --ckpt_path with a --model flag it would ignore",
        lambda t: t.fit(
            "--model.learning_rate",
            "0.5",
            "--ckpt_path",
            str(_fit_run(t) / "checkpoints" / "last.ckpt"),
            command="validate",
        ),
        2,
        r"^error: validate --ckpt_path: model\.learning_rate is 0\.5 here but 0\.01 in the checkpoint",
    ),
    # --- 11.13: the subcommands are listed ----------------------------------------------------
    Case(
        "11.13 mistyped subcommand",
        lambda t: ["swep"],
        2,
        r"^error: unknown subcommand 'swep' \(did you mean sweep\?\)",
        usage=True,
    ),
]


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # a command that writes to its default place writes here
    where = Where(tmp_path)
    case.setup(where)
    argv = case.argv(where)  # may run a setup command itself (e.g. a fit to validate)
    capfd.readouterr()
    if case.fresh:
        done = run_cli(*argv, timeout=120)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code = main(argv)
        out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    if case.usage:
        listing = usage().splitlines()
        assert lines[1:] == [line for line in listing if line.strip()]
        lines = lines[:1]
    if case.warn:
        lines = [line for line in lines if line.startswith("warning:")]
    elif case.code in (0, 1, 3):  # a command that ran: its end line is the one named
        lines = [line for line in lines if re.search(case.line, line)] if case.line else lines
    assert code == case.code, err
    if case.line:
        assert len(lines) == 1, lines
        assert re.search(case.line, lines[0]), lines[0]
    else:
        assert lines == [], lines
    for path in case.absent(where):
        assert not path.exists(), path
    case.then(where)


# --- cases whose output is not one stderr line ---------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], []])
def test_help_lists_every_subcommand_in_one_line_each(argv, capfd):
    code = main(argv)
    out, err = capfd.readouterr()
    shown = out or err
    assert code == (0 if argv else 2)
    for name in ("fit", "validate", "test", "sweep", "report", "slurm", "coord-check"):
        assert len(re.findall(rf"^  {name} +\S", shown, re.M)) == 1, (name, shown)


def test_a_nan_in_result_json_is_written_null(tmp_path, capfd):
    where = Where(tmp_path)
    where.defs(("nan", {"init_std": 1e38}))
    assert main(where.sweep()) == 0

    def refuse(constant):
        raise ValueError(constant)

    text = where.runs("g", "nan", "result.json").read_text()
    assert json.loads(text, parse_constant=refuse)["status"] == "diverged"


def test_every_test_the_guarantees_page_names_exists():
    root = Path(__file__).parent.parent
    page = (root / "docs" / "guarantees.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(tests/\w+\.py)::(\w+)", page))
    assert len(named) > 20
    for path, name in sorted(named):
        assert re.search(rf"^def {name}\(", (root / path).read_text(), re.M), f"{path}::{name}"
