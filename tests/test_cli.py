"""The command line: configs parse, runs write what users look for, mistakes get one line."""

from __future__ import annotations

import glob
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lstm_lightning.cli import COMMANDS, EXIT_CONFIG_ERROR, EXIT_DIVERGED, main
from lstm_lightning.fit import build_cli
from lstm_lightning.module import LanguageModel
from scripts import prose_corpus, stdlib_corpus
from tests.conftest import scalars, signal_at

__all__ = ["scalars"]  # test_module and test_resume import it from here until they switch

CONFIGS = sorted(glob.glob(str(Path(__file__).parent.parent / "configs" / "*.yaml")))


# A search space (configs/space_*.yaml) is no fit config: tests/test_space.py loads it.
@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if "space_" not in Path(c).name], ids=lambda p: Path(p).name
)
def test_every_config_parses_and_links_the_vocabulary(config, tmp_path, monkeypatch):
    # configs/sweep_stdlib.yaml reads data/stdlib.txt, which its script writes first.
    monkeypatch.chdir(tmp_path)
    assert stdlib_corpus.main(["--out", "data/stdlib.txt", "--bytes", "200000"]) == 0
    cli = build_cli(["--config", config, "--trainer.logger", "false"], run=False)
    assert isinstance(cli.model, LanguageModel)
    assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size


@pytest.mark.parametrize(
    "corpus, name, base",
    [("stdlib", "stdlib_mup", 32), ("prose", "prose_mup", 32), ("stdlib", "stdlib_mup_base64", 64)],
)
def test_the_study_recipes_train_wider_on_their_corpus_config(
    corpus, name, base, tmp_path, monkeypatch
):
    """configs/recipes/<name>.yaml, as its header says to use it: on the study's corpus
    config, at a width other than the proxy's, every key a model argument."""
    root = Path(__file__).parent.parent / "configs"
    monkeypatch.chdir(tmp_path)
    script = stdlib_corpus if corpus == "stdlib" else prose_corpus
    assert script.main(["--out", f"data/{corpus}.txt", "--bytes", "200000"]) == 0
    recipe = root / "recipes" / f"{name}.yaml"
    argv = ["--config", str(root / "study" / f"{corpus}.yaml"), "--config", str(recipe)]
    cli = build_cli([*argv, "--model.hidden_size", "128", "--trainer.logger", "false"], run=False)
    hp, tuned = cli.model.hparams, yaml.safe_load(recipe.read_text())["model"]
    assert {k: hp[k] for k in tuned} == tuned and hp.hidden_size == 128
    assert hp.parametrization == "mup" and hp.base_hidden_size == base


def test_overrides_reach_the_model():
    cli = build_cli(
        [
            "--config",
            CONFIGS[0],
            "--model.hidden_size",
            "48",
            "--data.batching",
            "contiguous",
            "--trainer.logger",
            "false",
        ],
        run=False,
    )
    assert cli.model.net.layers[0].hidden_size == 48
    assert cli.model.hparams.carry_state  # linked from data.batching


def test_print_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", CONFIGS[0], "--print_config"])
    assert exit_.value.code == 0
    assert "hidden_size: 128" in capsys.readouterr().out


def test_fit_writes_config_checkpoint_and_hparams_then_validates(tiny, tmp_path):
    assert main(["fit", *tiny(steps=6)]) == 0
    run = tmp_path / "runs" / "lstm" / "version_0"
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = scalars(run)
    for tag in ("train/loss", "val/loss", "val/ppl", "val/loss_floor", "hp/val_loss"):
        assert tag in metrics, tag
    assert metrics["hp/val_loss"][-1] == pytest.approx(metrics["val/loss"][-1])
    assert len(metrics["train/loss"]) == 3  # every log_every_n_steps=2 of 6 steps
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["validate", *tiny(), "--ckpt_path", ckpt]) == 0
    assert main(["test", *tiny(), "--ckpt_path", ckpt]) == 0


def test_the_saved_config_reproduces_the_run(tiny, tmp_path):
    assert main(["fit", *tiny(steps=6)]) == 0
    first = tmp_path / "runs" / "lstm" / "version_0"
    assert main(["fit", "--config", str(first / "config.yaml")]) == 0
    second = tmp_path / "runs" / "lstm" / "version_1"
    assert scalars(first)["val/loss"] == scalars(second)["val/loss"]


def test_fit_without_a_logger_leaves_the_working_folders_config_alone(tiny, tmp_path, monkeypatch):
    # Lightning's log folder without a logger is the working one: its config saver would
    # overwrite a config.yaml the user keeps there.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("# mine\n", encoding="utf-8")
    assert main(["fit", *tiny("--trainer.logger", "false", steps=2)]) == 0
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_nan_loss_stops_the_run_with_one_line(tiny, capsys):
    # An absurd init overflows the first LSTM pre-activation to inf - inf = nan.
    assert main(["fit", *tiny("--model.init_std", "1e38", steps=20)]) == EXIT_DIVERGED
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
    assert lines == [lines[0]] and "at step 0" in lines[0]


def write(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


BAD = [
    (lambda t: ["--model.learning_rate", "-1"], "model.learning_rate must be >= 0"),
    (lambda t: ["--model.hidden_size", "-8"], "model.hidden_size must be a positive integer"),
    (lambda t: ["--model.hidden_size", "abc"], 'model.hidden_size".* Got value: abc'),
    (lambda t: ["--data.source", "wav"], 'data.source".* Got value: wav'),
    (lambda t: ["--model.hiden_size", "8"], "did you mean model.hidden_size"),
    (
        lambda t: ["--config", write(t, "typo.yaml", b"model:\n  learning_rat: 0.1\n")],
        "learning_rat.*did you mean model.learning_rate",
    ),
    (lambda t: ["--config", str(t / "missing.yaml")], "missing.yaml does not exist"),
    (
        lambda t: ["--config", write(t, "bad.yaml", b"model: [1,\n")],
        "bad.yaml is not valid YAML: .* line 2",
    ),
    (
        lambda t: ["--data.source", "text", "--data.path", str(t / "none.txt")],
        "data.path: .*none.txt does not exist",
    ),
    (lambda t: ["--data.source", "text", "--data.path", write(t, "e.txt", b"")], "is empty"),
    (
        lambda t: ["--data.source", "text", "--data.path", write(t, "l1.txt", b"caf\xe9" * 99)],
        "is not UTF-8 text",
    ),
    (
        lambda t: ["--data.source", "text", "--data.path", write(t, "s.txt", b"ab" * 100)],
        "the val split has 10 tokens, fewer than the 17",
    ),
    (
        lambda t: [
            "--data.source",
            "tokens",
            "--data.vocab_size",
            "10",
            "--data.path",
            write(t, "ids.bin", bytes(range(40)) * 100),
        ],
        "token id .* at or above data.vocab_size=10",
    ),
    (lambda t: ["--data.batch_size", "0"], "data.batch_size must be a positive integer"),
    (lambda t: ["--ckpt_path", str(t / "none.ckpt")], "--ckpt_path: .*none.ckpt does not exist"),
    (
        lambda t: ["--ckpt_path", write(t, "text.ckpt", b"not a checkpoint")],
        "--ckpt_path: .*text.ckpt is not a readable checkpoint",
    ),
    (
        lambda t: ["--ckpt_path", write(t, "list.ckpt", _saved([1, 2]))],
        "--ckpt_path: .*list.ckpt is not a Lightning checkpoint",
    ),
    (lambda t: ["--ckpt_path", "last"], "--ckpt_path last: no last.ckpt in .*version_"),
    (lambda t: ["--trainer.max_steps", "0"], "trainer.max_steps=0 trains nothing"),
    (
        lambda t: ["--model.warmup_steps", "5"],
        "model.warmup_steps=5 is above trainer.max_steps=4: .* never reach",
    ),
    (
        lambda t: ["--checkpoint.dirpath", os.path.dirname(write(t, "last.ckpt", b"a run's"))],
        "checkpoint.dirpath .* holds another run's last.ckpt, .* --checkpoint.dirpath NEW",
    ),
    (lambda t: ["--config", write(t, "empty.yaml", b"")], "empty.yaml is empty"),
    (lambda t: ["--optimizer", "Adam"], "--optimizer Adam .*did you mean model.optimizer"),
    (lambda t: ["--lr_scheduler", "StepLR"], "--lr_scheduler StepLR .*did you mean model.sched"),
]


def _saved(obj) -> bytes:
    """``obj`` as torch.save writes it: a readable file that is no checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("make_args, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_gets_one_line_and_exit_2(tiny, tmp_path, capsys, make_args, message):
    assert main(["fit", *tiny(), *make_args(tmp_path)]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_debug_shows_the_traceback(tiny):
    # The parser's own message for the range type (without --debug: one line, explained).
    with pytest.raises(
        Exception, match=r"learning_rate\":\s+Not of type NonNegativeFloat: -1 does not"
    ):
        main(["fit", *tiny("--model.learning_rate", "-1"), "--debug"])


def test_contiguous_tbptt_run_trains(tiny, tmp_path):
    torch.manual_seed(0)
    assert main(["fit", *tiny("--data.batching", "contiguous", steps=6)]) == 0
    assert "val/loss" in scalars(tmp_path / "runs" / "lstm" / "version_0")


# --- subcommands ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["--help"], "usage: python cli.py SUBCOMMAND [--help] [flags]"),
        (["fitt"], "error: unknown subcommand 'fitt' (did you mean fit?)"),
        (["coord_check"], "error: unknown subcommand 'coord_check' (did you mean coord-check?)"),
    ],
)
def test_help_and_a_mistyped_subcommand_list_every_subcommand(argv, first_line, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    listing = out if argv == ["--help"] else err
    assert code == (0 if argv == ["--help"] else EXIT_CONFIG_ERROR)
    assert listing.splitlines()[0] == first_line
    for name, command in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.help)}$", listing, re.M), name
    assert set(COMMANDS) == {
        *("fit", "validate", "test", "sweep", "report", "slurm", "coord-check"),
        *("tune", "slurm-tune", "transfer"),
    }


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["report", "--out_dirr", "x"],
            "error: cli.py report: unknown flag --out_dirr (did you mean --out_dir",
        ),
        (
            ["sweep", "--dry_rnu"],
            "error: cli.py sweep: unknown flag --dry_rnu (did you mean --dry_run, --no_dry_run?)",
        ),
        (
            ["coord-check", "--zzz"],
            "error: cli.py coord-check: unknown flag --zzz (the flags: --config,",
        ),
    ],
)
def test_a_mistyped_flag_of_a_subcommand_gets_near_matches(argv, line, capsys):
    assert main(argv) == EXIT_CONFIG_ERROR
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(line), error


def test_optimizer_flags_are_not_offered(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--model.optimizer" in out
    assert not re.search(r"^\s+--(optimizer|lr_scheduler)\b", out, re.M)


# --- checkpoints, stops and resumes -----------------------------------------------------


def test_enable_checkpointing_false_works(tiny, tmp_path):
    assert main(["fit", *tiny("--trainer.enable_checkpointing", "false")]) == 0
    run = tmp_path / "runs" / "lstm" / "version_0"
    assert "val/loss" in scalars(run)
    assert not (run / "checkpoints").exists()


def test_last_ckpt_holds_the_end_of_the_run(tiny, tmp_path):
    # Saving every 4 steps, a 6-step run's last.ckpt is step 6's (Lightning keeps step 4's).
    assert main(["fit", *tiny("--checkpoint.every_n_train_steps", "4", steps=6)]) == 0
    last = tmp_path / "runs" / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6


def test_a_fit_checkpoints_periodically_by_default(tiny):
    cli = build_cli([*tiny(), "--trainer.logger", "false"], run=False)
    (checkpoint,) = cli.trainer.checkpoint_callbacks
    assert checkpoint.save_last and 0 < cli.config.checkpoint.every_n_train_steps


# Every count of steps is a multiple of 4 (K = 4 steps a batch); 4096 tokens are an epoch
# of 28 steps, so a stop at 12 and a resume from 8 are both inside an epoch.
RESUME = ["--data.synthetic_tokens", "4096", "--model.dropout", "0.1"]
RESUME += ["--trainer.val_check_interval", "20", "--trainer.limit_val_batches", "2"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_last_ckpt_and_ckpt_path_last_continues_exactly(
    tiny, tmp_path, capsys, signum
):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    save = ["--trainer.logger.init_args.save_dir"]
    assert main(["fit", *tiny(*RESUME, steps=40), *save, str(whole)]) == 0
    stopped = main(["fit", *tiny(*RESUME, steps=40), *save, str(parts), *signal_at(12, signum)])
    assert stopped == 128 + signum
    run = parts / "lstm" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    lines = capsys.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert (
        f"stopped by {name} at step 12: saved {last}; the same command with --ckpt_path last"
        in lines[-1]
    )
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 12
    assert main(["fit", *tiny(*RESUME, steps=40), *save, str(parts), "--ckpt_path", "last"]) == 0
    assert [p.name for p in (parts / "lstm").iterdir()] == ["version_0"]  # continued in place
    assert scalars(run) == scalars(whole / "lstm" / "version_0")
    assert "ckpt_path: null" in (run / "config.yaml").read_text()  # reproduces the whole run


def test_a_resume_from_an_older_checkpoint_logs_no_step_twice(tiny, tmp_path, recwarn):
    # As after a SIGKILL at step 16: last.ckpt is the periodic one from step 8.
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    save = ["--trainer.logger.init_args.save_dir"]
    assert main(["fit", *tiny(*RESUME, steps=40), *save, str(whole)]) == 0
    every = ["--checkpoint.every_n_train_steps", "8", "--checkpoint.save_top_k", "-1"]
    assert main(["fit", *tiny(*RESUME, *every, steps=16), *save, str(parts)]) == 0
    checkpoints = parts / "lstm" / "version_0" / "checkpoints"
    (checkpoints / "last.ckpt").write_bytes((checkpoints / "epoch=0-step=8.ckpt").read_bytes())
    assert main(["fit", *tiny(*RESUME, steps=40), *save, str(parts), "--ckpt_path", "last"]) == 0
    # hp/* is the summary a fit writes at its end: the 16-step run wrote one, a killed run
    # would not have.
    resumed = {k: v for k, v in scalars(parts / "lstm" / "version_0").items() if k[:3] != "hp/"}
    assert resumed == {
        k: v for k, v in scalars(whole / "lstm" / "version_0").items() if k[:3] != "hp/"
    }
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


class Planted:
    """A pickle payload: unpickling it in full would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_is_refused_and_not_executed(tiny, tmp_path, capsys):
    marker, planted = tmp_path / "executed", tmp_path / "planted.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "payload": Planted(marker)}, planted)
    for command in ("fit", "validate"):
        assert main([command, *tiny(), "--ckpt_path", str(planted)]) == EXIT_CONFIG_ERROR
        err = capsys.readouterr().err
        assert f"error: --ckpt_path: {planted} holds a Python object" in err
    assert not marker.exists()


# --- what a run says -------------------------------------------------------------------


def test_a_fit_ends_with_one_summary_line(tiny, tmp_path, capsys):
    assert main(["fit", *tiny(steps=6)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    run = tmp_path / "runs" / "lstm" / "version_0"
    metrics = scalars(run)
    loss, floor = metrics["val/loss"][-1], metrics["val/loss_floor"][-1]
    assert re.fullmatch(
        rf"done: {re.escape(str(run))}: 6 steps, val/loss {loss:.4f} \(floor {floor:.4f}\), \d+s",
        out[-1],
    ), out[-1]


def test_no_noise(tiny, tmp_path, capsys, caplog, monkeypatch, recwarn):
    # An srun on PATH outside a SLURM job: Lightning would hint at using it.
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(["fit", *tiny()]) == 0
    out, err = capsys.readouterr()
    shown = out + err + caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "litlogger" not in shown
    assert "srun" not in shown


def test_a_nan_loss_warns_at_most_once(tiny, recwarn):
    assert main(["fit", *tiny("--model.init_std", "1e38", steps=20)]) == EXIT_DIVERGED
    assert len([w for w in recwarn if "Encountered `nan`" in str(w.message)]) <= 1


def test_a_run_that_never_validates_is_named(tiny, capsys):
    assert main(["fit", *tiny("--trainer.val_check_interval", "8", steps=4)]) == 0
    err = capsys.readouterr().err
    assert "warning: trainer.val_check_interval=8 is above trainer.max_steps=4" in err


def test_fit_without_a_config_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit"]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: trainer.max_steps is not set, so Lightning would train")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_scoring_without_a_checkpoint_says_the_model_is_untrained(tiny, capsys, subcommand):
    assert main([subcommand, *tiny()]) == 0
    err = capsys.readouterr().err
    assert f"note: {subcommand} without --ckpt_path scores the model as initialised" in err


def test_validate_refuses_a_model_flag_the_checkpoint_would_ignore(tiny, tmp_path, capsys):
    assert main(["fit", *tiny()]) == 0
    run = tmp_path / "runs" / "lstm" / "version_0"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    code = main(["validate", *tiny("--model.learning_rate", "0.5"), "--ckpt_path", ckpt])
    assert code == EXIT_CONFIG_ERROR
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert "model.learning_rate is 0.5 here but 0.01 in the checkpoint, which keeps" in line
    assert f"--config {run / 'config.yaml'}" in line


@pytest.mark.slow
def test_importing_the_cli_installs_no_warning_filter():
    # Lightning's and torch's own filters first; then ours must add none (quiet() scopes them).
    code = (
        "import warnings, lightning.pytorch, lightning.pytorch.cli, torchmetrics\n"
        "before = list(warnings.filters)\n"
        "import lstm_lightning.cli\n"
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
