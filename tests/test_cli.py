"""The command line: configs parse, runs write what users look for, mistakes get one line."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_lightning.cli import EXIT_CONFIG_ERROR, EXIT_DIVERGED, main
from lstm_lightning.fit import build_cli
from lstm_lightning.module import LanguageModel
from scripts import stdlib_corpus

CONFIGS = sorted(glob.glob(str(Path(__file__).parent.parent / "configs" / "*.yaml")))


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


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
    (lambda t: ["--data.batch_size", "0"], "data.batch_size must be at least 1"),
]


@pytest.mark.parametrize("make_args, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_gets_one_line_and_exit_2(tiny, tmp_path, capsys, make_args, message):
    assert main(["fit", *tiny(), *make_args(tmp_path)]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    import re

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
