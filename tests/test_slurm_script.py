"""cli.py slurm without a cluster: exact sbatch text, quoting, refusals, a fake sbatch."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentError

from lstm_lightning import slurm, sweep
from lstm_lightning.cli import main as cli_main
from lstm_lightning.cli import run_command
from lstm_lightning.errors import ConfigError
from tests.conftest import TINY_BASE

ROOT = Path(__file__).parent.parent

# The comment every script carries between its #SBATCH lines and its body.
COMMENT = """\
#
# Written by `python cli.py slurm`, and rewritten by it: change the command, not this file.
# Task k of the array runs shard k of the sweep, read from SLURM_ARRAY_TASK_ID/_COUNT/_MIN.
# srun starts --ntasks-per-node processes on each node: the DDP ranks, which Lightning
# requires to equal trainer.devices (--devices) and --nodes trainer.num_nodes.
# SIGUSR1 reaches srun steps (not this shell) 90 s before the time limit: the run then
# saves a checkpoint between two steps and requeues the task, whose sweep resumes it.
# MASTER_PORT: Lightning derives it from the last 4 digits of SLURM_JOB_ID, and each
# array task has its own job id, so tasks sharing a node do not collide."""

# Paths are absolute and never read here: the script text is a pure function of them.
FIXED = {"runs_dir": "/scratch/runs", "workdir": "/srv/lstm", "python": "/opt/venv/bin/python"}
CPU = {**FIXED, "experiments": "G", "total_jobs": 4, "array_parallelism": 2, "devices_per_node": 2}
CPU_SCRIPT = f"""\
#!/bin/bash
#SBATCH --job-name=lstm_lightning
#SBATCH --array=0-3%2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --output=/scratch/runs/slurm/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
{COMMENT}
set -euo pipefail
cd /srv/lstm
export OMP_NUM_THREADS=1
srun /opt/venv/bin/python cli.py sweep --experiments G --runs_dir /scratch/runs \
--devices 2 --num_nodes 1
"""
GPU = {
    **FIXED,
    "experiments": "LSTM_ADAM_MUP_SCALING,LSTM_ADAM_SP_SCALING",
    "labels": "a,b",
    "definitions": "/home/u/defs.py",
    "config": "/home/u/base.yaml",
    "total_jobs": 3,
    "nodes": 2,
    "gpus_per_node": 4,
    "cpus_per_task": 8,
    "mem": "64G",
    "time": "1-00:00:00",
    "partition": "gpu",
    "account": "proj1",
    "qos": "high",
    "job_name": "mup",
    "python": "python",
    "setup": "source .venv/bin/activate",
    "retry_failed": True,
}
GPU_SCRIPT = f"""\
#!/bin/bash
#SBATCH --job-name=mup
#SBATCH --array=0-2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:4
#SBATCH --mem=64G
#SBATCH --time=1-00:00:00
#SBATCH --partition=gpu
#SBATCH --account=proj1
#SBATCH --qos=high
#SBATCH --output=/scratch/runs/slurm/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
{COMMENT}
set -euo pipefail
cd /srv/lstm
source .venv/bin/activate
export OMP_NUM_THREADS=8
srun python cli.py sweep --experiments LSTM_ADAM_MUP_SCALING,LSTM_ADAM_SP_SCALING --labels a,b \
--definitions /home/u/defs.py --config /home/u/base.yaml --runs_dir /scratch/runs --retry_failed \
--devices 4 --num_nodes 2
"""


def script(**options) -> str:
    return slurm.sbatch_script(slurm.resolve_options(options))


def sbatch_values(text: str) -> dict[str, str]:
    """{flag: value} of the #SBATCH lines ('' for a bare flag)."""
    lines = [line.removeprefix("#SBATCH --") for line in text.splitlines()]
    return dict((line + "=").split("=")[:2] for line in lines if not line.startswith("#"))


def line_starting(text: str, start: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(start)]
    return line


def srun_flag(text: str, flag: str) -> str:
    """The value the srun line gives ``flag``, as the shell would read it."""
    argv = shlex.split(line_starting(text, "srun"))
    return argv[argv.index(flag) + 1]


# --- the script text --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, expected", [(CPU, CPU_SCRIPT), (GPU, GPU_SCRIPT)], ids=["cpu", "gpu"]
)
def test_script_text_is_exact(options, expected):
    assert script(**options) == expected


@pytest.mark.parametrize(
    "total_jobs, parallelism, array",
    [(1, None, "0-0"), (4, None, "0-3"), (4, 2, "0-3%2"), (10, 16, "0-9%16")],
)
def test_array_line(total_jobs, parallelism, array):
    text = script(**FIXED, total_jobs=total_jobs, array_parallelism=parallelism)
    assert sbatch_values(text)["array"] == array


@pytest.mark.parametrize(
    "gpus, devices, ntasks, gres",
    [(0, None, "1", None), (4, None, "4", "gpu:4"), (0, 2, "2", None), (4, 2, "2", "gpu:4")],
)
def test_tasks_per_node_are_the_devices(gpus, devices, ntasks, gres):
    text = script(**FIXED, total_jobs=1, gpus_per_node=gpus, devices_per_node=devices)
    values = sbatch_values(text)
    assert (values["ntasks-per-node"], values.get("gres")) == (ntasks, gres)
    assert shlex.split(line_starting(text, "srun"))[-4:] == [
        "--devices",
        ntasks,
        "--num_nodes",
        "1",
    ]


@pytest.mark.parametrize(
    "runs_dir, output",
    [
        ("/s/runs", "/s/runs/slurm/%x_%A_%a.out"),
        ("/s/my runs", '"/s/my runs/slurm/%x_%A_%a.out"'),  # sbatch's parser honours "..."
        ("/s/it's", '"/s/it\'s/slurm/%x_%A_%a.out"'),
        ("/s/100%", "/s/100%%/slurm/%x_%A_%a.out"),  # a literal % in a SLURM file name
    ],
)
def test_output_line_quotes_for_sbatch(runs_dir, output):
    text = script(**{**FIXED, "runs_dir": runs_dir}, total_jobs=1)
    assert sbatch_values(text)["output"] == output
    assert srun_flag(text, "--runs_dir") == runs_dir  # the shell's copy: as given


def test_the_sweep_takes_its_shard_from_the_array():
    # Without --job_id and --total_jobs on its line, the sweep reads the array task.
    argv = shlex.split(line_starting(script(**CPU), "srun"))
    assert "--job_id" not in argv and "--total_jobs" not in argv
    for task in range(4):
        env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "4"}
        assert sweep.choose_shard(None, None, {**env, "SLURM_ARRAY_TASK_MIN": "0"}) == (task, 4)


@pytest.mark.parametrize(
    "experiments, labels, total_jobs, name",
    [
        (None, None, 1, "EXPERIMENTS_1jobs.sbatch"),
        ("G", None, 4, "G_4jobs.sbatch"),
        ("A,B", "x+1,y", 2, "A,B_x+1,y_2jobs.sbatch"),
    ],
)
def test_script_name(experiments, labels, total_jobs, name):
    options = slurm.resolve_options(
        {**FIXED, "experiments": experiments, "labels": labels, "total_jobs": total_jobs}
    )
    assert slurm.script_path(options) == Path("/scratch/runs/slurm", name)


def test_a_long_selection_gets_a_short_name():
    options = slurm.resolve_options({**FIXED, "labels": ",".join(["label"] * 50), "total_jobs": 1})
    name = slurm.script_path(options).name
    assert name.startswith("EXPERIMENTS_label,label") and len(name) < 120


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"total_jobs": 0}, "--total_jobs must be at least 1, got 0"),
        ({"array_parallelism": 0}, "--array_parallelism must be at least 1, got 0"),
        ({"nodes": 0}, "--nodes must be at least 1, got 0"),
        ({"devices_per_node": 0}, "--devices_per_node must be at least 1, got 0"),
        ({"gpus_per_node": -1}, "--gpus_per_node must be at least 0, got -1"),
        ({"cpus_per_task": 0}, "--cpus_per_task must be at least 1, got 0"),
        ({"total_jobs": slurm.REQUIRED}, "--total_jobs is required"),
        ({"nodes": "2"}, "--nodes must be int, got '2'"),
        ({"partition": ""}, "--partition is empty; give a value or leave the flag out"),
        (
            {"gpus_per_node": 2, "devices_per_node": 4},
            "--devices_per_node 4 exceeds --gpus_per_node 2",
        ),
        ({"job_name": "interactive"}, "--job_name 'interactive': it names the log files"),
        ({"job_name": "a/b"}, "--job_name 'a/b': it names the log files"),
        ({"nodez": 2}, "unknown option 'nodez' (did you mean nodes?); valid: experiments, labels,"),
    ],
)
def test_option_errors_name_the_flag(options, message):
    with pytest.raises(ConfigError) as err:
        script(**{**FIXED, "total_jobs": 2, **options})
    assert str(err.value).startswith(message)


def test_an_unknown_option_lists_every_valid_one():
    with pytest.raises(ConfigError) as err:
        slurm.resolve_options({"gpus": 1})
    assert str(err.value).endswith("valid: " + ", ".join(o.name for o in slurm.OPTIONS))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("partition", "gpu\n#SBATCH --exclusive", "holds a newline or control character"),
        ("setup", "module load a\nmodule load b", "holds a newline or control character"),
        ("labels", "a\nb", "holds a newline or control character"),
        ("runs_dir", "/s/runs\n", "holds a newline or control character"),
        ("workdir", "/srv\tlstm", "holds a newline or control character"),
        ("partition", 'g"pu', "which an #SBATCH line cannot"),
        ("account", "a\\b", "which an #SBATCH line cannot"),
        ("runs_dir", "/s/run#1", "which an #SBATCH line cannot"),
        ("runs_dir", "/s/hetjob", "hetjob or packjob"),
    ],
)
def test_values_that_break_a_line_are_refused(option, value, message):
    with pytest.raises(ConfigError, match=f"^--{option}: .*{message}"):
        script(**{**FIXED, "total_jobs": 2, option: value})


# --- main: validation first, then the file, then sbatch ------------------------------------


BASE = TINY_BASE  # the suite's one tiny config (conftest)


@pytest.fixture
def project(tmp_path):
    """A definitions file and a base config in tmp_path; ``project.flags(...)`` the CLI's."""

    class Project:
        definitions = tmp_path / "defs.py"
        config = tmp_path / "base.yaml"
        runs = tmp_path / "runs"

        def defs(self, *runs: tuple[str, dict]) -> None:
            subs = [{"label": label, "overrides": o} for label, o in runs]
            self.definitions.write_text(
                f"EXPERIMENTS = [{{'name': 'g', 'subexperiments': {subs!r}}}]\n"
            )

        def flags(self, *extra: str) -> list[str]:
            return ["--definitions", str(self.definitions), "--config", str(self.config),
                    "--runs_dir", str(self.runs), "--total_jobs", "2", *extra]  # fmt: skip

        def script(self, name: str = "EXPERIMENTS_2jobs.sbatch") -> Path:
            return self.runs / "slurm" / name

    Project.config.write_text(yaml.safe_dump(BASE))
    project = Project()
    project.defs(("a+b", {"learning_rate": 0.02}), ("c", {"hidden_size": 24}))
    return project


def test_paths_and_labels_are_shell_quoted(project, tmp_path, capsys):
    project.runs = tmp_path / "my runs"
    project.config = tmp_path / "it's $HOME.yaml"
    project.config.write_text(yaml.safe_dump(BASE))
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    (workdir / "cli.py").touch()
    assert run_command("slurm", project.flags("--labels", "a+b", "--workdir", str(workdir))) == 0
    path = project.script("EXPERIMENTS_a+b_2jobs.sbatch")
    assert capsys.readouterr().out == f"{path}\n"
    text = path.read_text()
    assert shlex.split(line_starting(text, "cd ")) == ["cd", str(workdir)]
    assert shlex.split(line_starting(text, "srun")) == [
        "srun", sys.executable, "cli.py", "sweep", "--labels", "a+b",
        "--definitions", str(project.definitions), "--config", str(project.config),
        "--runs_dir", str(project.runs), "--devices", "1", "--num_nodes", "1",
    ]  # fmt: skip
    assert sbatch_values(text)["output"] == f'"{project.runs}/slurm/%x_%A_%a.out"'


def test_bash_runs_the_script_to_srun_with_the_same_arguments(project, tmp_path):
    # The shell itself, not shlex, reads the script: a fake srun records what it got.
    project.runs = tmp_path / "my runs"
    project.config = tmp_path / "it's $HOME.yaml"
    project.config.write_text(yaml.safe_dump(BASE))
    bin_dir = fake_bin(tmp_path, "srun", 'cd "$(dirname "$0")" && printf \'%s\\0\' "$@" > argv')
    assert run_command("slurm", project.flags("--labels", "a+b")) == 0
    path = project.script("EXPERIMENTS_a+b_2jobs.sbatch")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", path], env=env, check=True)
    argv = (bin_dir / "argv").read_text().split("\0")[:-1]
    assert argv == shlex.split(line_starting(path.read_text(), "srun"))[1:]
    assert argv[argv.index("--config") + 1] == str(project.config)


def test_relative_paths_become_absolute_and_the_script_is_rewritten(project, monkeypatch):
    monkeypatch.chdir(project.runs.parent)
    flags = ["--definitions", "defs.py", "--config", "base.yaml", "--runs_dir", "runs"]
    assert run_command("slurm", [*flags, "--total_jobs", "2"]) == 0
    assert run_command("slurm", [*flags, "--total_jobs", "2", "--time", "00:10:00"]) == 0
    text = project.script().read_text()
    assert sbatch_values(text)["time"] == "00:10:00"
    assert srun_flag(text, "--runs_dir") == str(project.runs)
    assert srun_flag(text, "--config") == str(project.config)


@pytest.mark.parametrize(
    "runs, flags, message",
    [
        ([("a", {"learning_rat": 0.1})], [], "g/a: unknown override key 'learning_rat'"),
        ([("a b", {})], [], "label 'a b' is not a safe folder name"),
        ([("a", {})], ["--experiments", "NOPE"], "--experiments: no group named 'NOPE'"),
        ([("a", {"batch_size": 5})], ["--devices_per_node", "2"], "g/a: data.batch_size 5 is"),
        ([("a", {})], ["--gpus_per_node", "1"], "g/a: trainer.accelerator is cpu"),
        ([("a", {})], ["--workdir", "/"], "--workdir: / holds no cli.py"),
    ],
)
def test_an_invalid_selection_writes_nothing(project, runs, flags, message):
    project.defs(*runs)
    with pytest.raises(ConfigError) as err:
        run_command("slurm", project.flags(*flags))
    assert message in str(err.value)  # the sweep's own words for its checks
    assert not project.runs.exists()


def fake_bin(tmp_path: Path, name: str, body: str) -> Path:
    """A folder holding an executable shell script ``name``, for the front of PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)
    return bin_dir


SBATCH_OK = 'printf "%s\\n" "$@" > "$(dirname "$0")/argv"; echo "Submitted batch job 4242"'


def test_submit_prints_the_job_id(project, tmp_path, monkeypatch, capsys):
    bin_dir = fake_bin(tmp_path, "sbatch", SBATCH_OK)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert run_command("slurm", project.flags("--submit")) == 0
    assert capsys.readouterr().out == f"{project.script()}\n4242\n"
    assert (bin_dir / "argv").read_text() == f"{project.script()}\n"


@pytest.mark.parametrize(
    "sbatch, message",
    [
        (
            "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1",
            "failed (exit 1): sbatch: error: invalid partition specified: nope",
        ),
        ("echo 'queue full'", "failed (exit 0): queue full"),  # no job id: not submitted
        (None, "sbatch is not on PATH; run this on a SLURM login node"),
    ],
)
def test_a_failed_submission_is_one_error_line(
    project, tmp_path, monkeypatch, capsys, sbatch, message
):
    bin_dir = fake_bin(tmp_path, "sbatch", sbatch) if sbatch else tmp_path
    monkeypatch.setenv("PATH", str(bin_dir))  # only the fake: no real sbatch behind it
    assert run_command("slurm", project.flags("--submit")) == 1
    out, err = capsys.readouterr()
    assert out == f"{project.script()}\n"  # written: it can still be submitted by hand
    (line,) = err.splitlines()
    assert line.startswith(f"error: sbatch {project.script()}" if sbatch else "error: sbatch")
    assert line.endswith(message)


# --- the command line derives from OPTIONS ---------------------------------------------------


def test_every_option_is_a_flag_with_its_help(capsys):
    with pytest.raises(SystemExit):
        run_command("slurm", ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for option in slurm.OPTIONS:
        assert f"--{option.name}" in shown
        assert " ".join(option.help.split()) in shown
    assert "--submit, --no_submit" in shown


def test_an_unknown_flag_is_refused(project):
    with pytest.raises(ArgumentError, match="nodez"):
        run_command("slurm", project.flags("--nodez", "2"))


def test_cli_prints_a_bad_selection_as_one_line(project, capsys):
    project.defs(("a", {"learning_rat": 0.1}))
    assert cli_main(["slurm", *project.flags()]) == 2
    out, err = capsys.readouterr()
    assert (out, err.count("\n")) == ("", 1)
    assert err.startswith("error: g/a: unknown override key 'learning_rat'")
    assert not project.runs.exists()
