"""cli.py tune: deterministic trials, exactly N trials over several processes, a killed trial
resumed into its own number, a finished study left alone, a tiny real study the report
reads, and cli.py slurm-tune's script."""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from lstm_lightning import tune
from lstm_lightning.cli import main as cli_main
from lstm_lightning.errors import ConfigError
from lstm_lightning.execute import Outcome
from lstm_lightning.space import Space
from lstm_lightning.study import (
    Handle,
    Spec,
    check_definition,
    claim_next,
    label,
    prepare,
    preview,
)
from tests.conftest import ROOT, TINY_BASE, run_cli, start_cli, wait_until

SPACE = {
    "learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True},
    "init_std": {"low": 0.5, "high": 2.0},
    "seq_len": {"low": 4, "high": 12, "step": 4},
    "readout_zero_init": {"choices": [True, False]},
}


class Files:
    """A tiny base config and a space in a folder; ``spec(**more)`` a study on them."""

    def __init__(self, where: Path, space: dict = SPACE, **trainer):
        self.base, self.space, self.runs = where / "base.yaml", where / "space.yaml", where / "runs"
        base = yaml.safe_load(yaml.safe_dump(TINY_BASE))
        base["trainer"].update(trainer)
        self.base.write_text(yaml.safe_dump(base))
        self.space.write_text(yaml.safe_dump(space))

    def spec(self, **more) -> Spec:
        fields = {
            "study": "s",
            "trials": 4,
            "sampler": "random",
            "runs_dir": str(self.runs),
            **more,
        }
        return Spec(config=str(self.base), space=str(self.space), **fields)

    def args(self, *extra: str, study: str = "s", trials: int = 4) -> list[str]:
        return [
            *("tune", "--config", str(self.base), "--space", str(self.space)),
            *("--study", study, "--trials", str(trials), "--runs_dir", str(self.runs)),
            *extra,
        ]

    def trials(self, study: str = "s") -> list[optuna.trial.FrozenTrial]:
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.runs / study / "study.journal"))
        )
        return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.fixture
def files(tmp_path):
    return Files(tmp_path)


def in_range(params: dict) -> bool:
    return (
        1e-3 <= params["learning_rate"] <= 0.1
        and 0.5 <= params["init_std"] <= 2.0
        and params["seq_len"] in (4, 8, 12)
        and params["readout_zero_init"] in (True, False)
    )


# --- trial params: deterministic, whoever asks ---------------------------------------------


@pytest.mark.parametrize("kind", ["random", "qmc"])
def test_trial_params_follow_the_seed_and_the_number_not_the_order(files, kind):
    space = Space.from_file(files.space, transfer=True)
    forward = [preview(space, kind, 7, n) for n in range(8)]
    backward = [preview(space, kind, 7, n) for n in reversed(range(8))][::-1]
    assert forward == backward
    assert all(in_range(p) for p in forward)
    assert len({p["learning_rate"] for p in forward}) == 8  # every trial its own point
    assert forward != [preview(space, kind, 8, n) for n in range(8)]


def test_qmc_spreads_the_trials_over_each_range(files):
    space = Space.from_file(files.space, transfer=True)
    rates = sorted(preview(space, "qmc", 0, n)["init_std"] for n in range(16))
    # 16 points of a (shifted) base-3 Halton sequence: no gap wider than two strata
    gaps = [b - a for a, b in zip([0.5, *rates], [*rates, 2.0])]
    assert max(gaps) < 2 * 1.5 / 9


@pytest.mark.parametrize("kind", ["random", "qmc", "tpe"])  # tpe: its random start
def test_the_journal_gives_each_trial_its_numbers_params(files, kind):
    setup = prepare(files.spec(sampler=kind, seed=3))
    handle = Handle(setup)
    for _ in range(3):
        claim = claim_next(handle)
        assert claim.params == preview(setup.space, kind, 3, claim.number)
        handle.study.tell(claim.number, 1.0)
        claim.lock.release()
    trials = files.trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.user_attrs["label"] for t in trials] == ["trial_0000", "trial_0001", "trial_0002"]


# --- several processes, one study ----------------------------------------------------------


def claimer(spec: Spec, out: str) -> None:
    """A process asking and telling trials without training, as fast as it can."""
    handle, mine = Handle(prepare(spec)), []
    while (claim := claim_next(handle)) is not None:
        mine.append(claim.number)
        time.sleep(0.02)
        handle.study.tell(claim.number, float(claim.number))
        claim.lock.release()
    Path(out).write_text(json.dumps(mine))


@pytest.mark.slow
def test_two_processes_on_one_study_ask_exactly_n_trials_none_twice(files, tmp_path):
    spec = files.spec(trials=10)
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"claimed{i}.json" for i in range(2)]
    procs = [context.Process(target=claimer, args=(spec, str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    claimed = [json.loads(o.read_text()) for o in outs]
    assert sorted(claimed[0] + claimed[1]) == list(range(10))  # none twice, none missing
    trials = files.trials()
    assert [t.number for t in trials] == list(range(10))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_a_running_trial_with_a_live_claim_is_not_adopted(files):
    handle = Handle(prepare(files.spec(trials=2)))
    first = claim_next(handle)  # held: its process is alive
    second = claim_next(handle)
    assert (first.number, second.number) == (0, 1) and not second.adopted
    assert claim_next(handle) is None  # 2 running: the study asks no more
    first.lock.release()  # as if its process died
    again = claim_next(handle)
    assert (again.number, again.adopted, again.params) == (0, True, first.params)


# --- outcomes told ---------------------------------------------------------------------------


def test_a_diverged_trial_is_told_failed_with_its_step_and_the_search_goes_on(files, monkeypatch):
    handle = Handle(prepare(files.spec(trials=2)))
    diverged = {"status": "diverged", "diverged_at_step": 5, "metrics": {"val/loss": None}}
    completed = {"status": "completed", "metrics": {"val/loss": 2.5}, "error": None}
    outcomes = iter([Outcome("ran", {**diverged, "error": None}), Outcome("ran", completed)])
    monkeypatch.setattr(tune, "run_one", lambda run, threads: next(outcomes))
    monkeypatch.setattr(tune, "under_slurm", lambda: False)
    tune.loop(handle.setup.spec, handle.setup)
    first, second = files.trials()
    assert first.state == TrialState.FAIL and first.user_attrs["diverged_at_step"] == 5
    assert "diverged at step 5" in first.user_attrs["error"]
    assert second.state == TrialState.COMPLETE and second.value == 2.5


def test_a_rerun_with_another_definition_is_refused(files):
    check_definition(prepare(files.spec(seed=0)))
    written = yaml.safe_load((files.runs / "s" / "study.yaml").read_text())
    assert written["proxy"] == {"hidden_size": 16, "base_hidden_size": 16, "parametrization": "mup"}
    assert written["space"] == SPACE and written["sampler"] == "random"
    check_definition(prepare(files.spec(seed=0, trials=9)))  # more trials: the same study
    with pytest.raises(
        ConfigError,
        match=r"different seed \(0: pass --seed 0 to continue it\); give a new --study name",
    ):
        check_definition(prepare(files.spec(seed=1)))
    # a study begun under the old default sampler (random) says how to continue it
    with pytest.raises(ConfigError, match=r"different sampler \(random: pass --sampler random to"):
        check_definition(prepare(files.spec(seed=0, sampler="tpe")))
    files.base.write_text(
        files.base.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02")
    )
    with pytest.raises(
        ConfigError, match=r"different base config \(model.learning_rate 0.01 -> 0.02"
    ):
        check_definition(prepare(files.spec(seed=0)))


def test_a_finished_study_is_left_alone(files, capsys):
    handle = Handle(prepare(files.spec(trials=2)))
    for value in (3.0, 2.0):
        claim = claim_next(handle)
        handle.study.tell(claim.number, value)
        claim.lock.release()
    assert cli_main(files.args("--workers", "1", trials=2)) == 0
    err = capsys.readouterr().err
    assert "study s is complete: 2 of 2 trials" in err
    assert "best: trial 1 (trial_0001) 2" in err
    assert len(files.trials()) == 2
    assert not list(files.runs.glob("s/trial_*/config.yaml"))  # nothing trained


def test_dry_run_prints_the_plan_and_writes_nothing(files, capsys):
    assert cli_main(files.args("--dry_run", "--sampler", "qmc", trials=3)) == 0
    out = capsys.readouterr().out
    assert "study s in" in out and "(new): 3 trials, 0 finished, 0 running, 3 to ask" in out
    space = Space.from_file(files.space)
    for n in range(3):
        shown = preview(space, "qmc", 0, n)
        (line,) = [x for x in out.splitlines() if x.startswith(f"  {label(n)}  ")]
        assert f"learning_rate={shown['learning_rate']:.4g}" in line.split()
    assert not files.runs.exists()
    # the default sampler is TPE (the μTransfer study's rule): its plan says it adapts
    assert cli_main(files.args("--dry_run", trials=3)) == 0
    out = capsys.readouterr().out
    assert "sampler tpe seed 0" in out and "tpe is adaptive" in out


def test_bad_input_is_one_line(files, capsys):
    assert cli_main(files.args("--sampler", "grid")) == 2
    assert cli_main([*files.args(study="../x")]) == 2
    assert "--study '../x': it names a folder" in capsys.readouterr().err
    files.space.write_text("dropout: {low: 0.0, high: 0.5}\n")
    assert cli_main(files.args()) == 2
    assert "regularization" in capsys.readouterr().err
    assert not files.runs.exists()


# --- real trials -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_study_trains_its_trials_as_runs_the_report_reads(tmp_path):
    space = {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True},
             "init_std": {"choices": [1.0, 1.0e38]}}  # fmt: skip
    files = Files(tmp_path, space)
    done = run_cli(*files.args("--workers", "1", "--seed", "1", trials=4), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = files.trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    for t in trials:
        run_dir = files.runs / "s" / label(t.number)
        result = json.loads((run_dir / "result.json").read_text())
        assert (result["study"], result["trial"], result["label"]) == (
            "s",
            t.number,
            label(t.number),
        )
        assert result["overrides"] == t.params
        config = yaml.safe_load((run_dir / "config.yaml").read_text())  # what fit reproduces
        assert config["model"]["learning_rate"] == t.params["learning_rate"]
        if t.params["init_std"] == 1.0e38:  # blows up at once: told FAIL, its step kept
            assert t.state == TrialState.FAIL and t.user_attrs["diverged_at_step"] == 0
        else:
            assert t.state == TrialState.COMPLETE and t.value == result["metrics"]["val/loss"]
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}
    assert "[tune] best: trial" in done.stderr
    report = run_cli("report", "--runs_dir", str(files.runs), timeout=120)
    assert report.returncode == 0, report.stderr
    rows = (files.runs / "results.csv").read_text().splitlines()
    assert sum("trial_000" in r for r in rows) == 4


@pytest.mark.slow
def test_two_tune_processes_train_exactly_n_trials(files):
    # three processes: one alone, one with two workers
    procs = [start_cli(*files.args("--workers", k, trials=4)) for k in ("1", "2")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert [t.number for t in files.trials()] == [0, 1, 2, 3]
    folders = sorted(p.parent.name for p in files.runs.glob("s/trial_*/result.json"))
    assert folders == [label(n) for n in range(4)]


@pytest.mark.slow
def test_sigkill_mid_trial_then_restart_reports_into_the_same_trial(tmp_path):
    files = Files(tmp_path, max_steps=400, val_check_interval=400)
    ckpt = files.runs / "s" / "trial_0000" / "last.ckpt"
    proc = start_cli(*files.args("--workers", "1", trials=2), stderr=subprocess.DEVNULL)
    try:
        wait_until(ckpt.exists, 120, "trial_0000's first checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (only,) = files.trials()
    assert (only.number, only.state) == (0, TrialState.RUNNING)
    done = run_cli(*files.args("--workers", "1", trials=2), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trial_0000 (resume, adopted from a dead process)" in done.stderr
    trials = files.trials()
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.COMPLETE),
    ]
    result = json.loads((files.runs / "s" / "trial_0000" / "result.json").read_text())
    assert result["trial"] == 0 and result["resumed_from_step"] > 0


# --- cli.py slurm-tune -------------------------------------------------------------------------


def test_slurm_tune_writes_an_array_whose_tasks_share_the_study(files, capsys):
    runs = files.runs.parent / "my runs"
    flags = ["--config", str(files.base), "--space", str(files.space), "--study", "s"]
    flags += ["--trials", "8", "--runs_dir", str(runs), "--total_jobs", "3"]
    flags += ["--array_parallelism", "2", "--workdir", str(ROOT), "--python", "/opt/py"]
    assert cli_main(["slurm-tune", *flags, "--sampler", "qmc", "--no_transfer"]) == 0
    path = runs / "slurm" / "tune_s_3jobs.sbatch"
    assert capsys.readouterr().out.strip() == str(path)
    quoted = f"'{runs}'"
    assert (
        path.read_text()
        == f"""\
#!/bin/bash
#SBATCH --job-name=lstm_lightning
#SBATCH --array=0-2%2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --output="{runs}/slurm/%x_%A_%a.out"
#SBATCH --open-mode=append
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
{tune.SLURM_EXPLANATION}
set -euo pipefail
cd {ROOT}
export OMP_NUM_THREADS=1
srun /opt/py cli.py tune --config {files.base} --space {files.space} --study s --trials 8 \
--sampler qmc --seed 0 --objective val/loss --runs_dir {quoted} --no_transfer --workers 1
"""
    )


def test_slurm_tune_checks_the_study_before_writing(files, capsys):
    files.space.write_text("learning_rat: {low: 0.001, high: 0.1}\n")
    flags = ["--config", str(files.base), "--space", str(files.space), "--study", "s"]
    flags += ["--trials", "8", "--runs_dir", str(files.runs), "--total_jobs", "3"]
    assert cli_main(["slurm-tune", *flags]) == 2
    assert "did you mean learning_rate" in capsys.readouterr().err
    assert not files.runs.exists()
