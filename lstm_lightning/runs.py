"""A sweep's runs: their override keys, resolved configs and folders.

A run is one sub-experiment: the base config with its overrides, parsed by the parser of
``cli.py fit`` (passed in) and written to ``<runs_dir>/<group>/<label>/config.yaml``,
beside ``result.json`` (``results``), ``last.ckpt`` and the TensorBoard events. ``plan``
reads the folder and sets the run's action: ``run`` (from the start), ``resume`` (from
its newest checkpoint), ``skip`` (its result stands), ``refuse`` (its config changed;
``--force`` reruns it), ``fail`` (a checkpoint is unreadable: the run is recorded failed
with that line) or ``hold`` (its result.json is unreadable: left as it is and named).

``lstm_lightning.config_hash`` says whether a result was trained from the run's config.
A per-run fcntl lock (``lock``), which the OS releases when its holder dies, makes each
run train once whoever starts it: two sweeps, or SLURM array tasks, on one folder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from lstm_lightning import results
from lstm_lightning.checkpoints import Unreadable
from lstm_lightning.checkpoints import load as load_checkpoint
from lstm_lightning.config_hash import ARGUMENTS, changes, differing, same_config
from lstm_lightning.corpus import check_source
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError, did_you_mean
from lstm_lightning.fused import resolve_steps_per_batch

# Flat override keys that are not a model or data argument of the same name.
ALIAS_EXTRA = {
    "seed": "seed_everything",
    "max_steps": "trainer.max_steps",
    "val_check_interval": "trainer.val_check_interval",
    "limit_val_batches": "trainer.limit_val_batches",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "precision": "trainer.precision",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "num_nodes": "trainer.num_nodes",
}
FULL_PATH_SECTIONS = ("model", "data", "trainer", "checkpoint")
CONFIG = "config.yaml"
LOCK = ".lock"


def _aliases() -> dict[str, str]:
    """The one alias table: every model and data argument by its own name, then the
    extras. ``seed`` is the run seed (``seed_everything``); the data's own seed, which
    fixes the synthetic language, is ``data.seed``."""
    table = {path.split(".")[1]: path for path in ARGUMENTS}
    del table["carry_state"]  # linked from data.batching
    table["vocab_size"] = "data.vocab_size"  # the model's is linked from the data
    table.update(ALIAS_EXTRA)
    return table


ALIASES = _aliases()


@dataclass
class Run:
    """One training run: where it lives, its resolved config, and what the sweep does."""

    group: str
    label: str
    overrides: dict[str, Any]
    config: Any = None  # the parsed jsonargparse Namespace
    text: str = ""  # the resolved config.yaml
    cost: float = 1.0
    work: float = 1.0  # per training step: tokens x layers x H^2 (its threads follow it)
    shard: int = 0
    action: str = "run"  # run | resume | skip | refuse | fail | hold (see the module doc)
    note: str = ""
    dir: Path = field(default_factory=Path)
    force: bool = False  # the sweep's --force and --retry_failed: plan() under the lock
    retry_failed: bool = False

    @property
    def name(self) -> str:
        return f"{self.group}/{self.label}"

    def hparam(self, alias: str) -> Any:
        return self.config[ALIASES[alias]]


# --- resolution -------------------------------------------------------------------------


def set_path(tree: dict, path: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for path ``a.b.c``, creating levels as needed."""
    *parents, leaf = path.split(".")
    for key in parents:
        node = tree.get(key)
        if not isinstance(node, dict):
            tree[key] = node = {}
        tree = node
    tree[leaf] = value


def resolve_key(key: str, where: str) -> str:
    if key in ALIASES:
        return ALIASES[key]
    if "." in key and key.split(".", 1)[0] in FULL_PATH_SECTIONS:
        return key  # a full path: the parser checks it
    raise ConfigError(
        f"{where}: unknown override key {key!r}{did_you_mean(key, ALIASES)}; use a flat key "
        "such as learning_rate or a full path such as model.init_std"
    )


def config_tree(run: Run, base: dict, runs_dir: Path, extra: dict | None = None) -> dict:
    """The run's config before parsing: the base, its overrides, ``extra``, its folder."""
    tree = copy.deepcopy(base)
    for key, value in {**run.overrides, **(extra or {})}.items():
        set_path(tree, resolve_key(key, run.name), value)
    run.dir = runs_dir / run.group / run.label
    # Each run logs into its own folder with a fixed version: no collisions.
    logger = {
        "save_dir": str(runs_dir / run.group),
        "name": run.label,
        "version": "",
        "default_hp_metric": False,
    }
    set_path(
        tree,
        "trainer.logger",
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": logger},
    )
    set_path(tree, "checkpoint.dirpath", str(run.dir))
    # Lightning's SIGUSR1 handler saves hpc_ckpt_N.ckpt here before requeueing.
    set_path(tree, "trainer.default_root_dir", str(run.dir))
    return tree


def resolve(run: Run, parser, base: dict, runs_dir: Path, extra: dict | None = None) -> None:
    """Fill ``run.config``, ``run.text``, ``run.work`` and ``run.cost`` with ``parser`` (the
    one of ``cli.py fit``). A bad key or value of ours is a ConfigError naming the run;
    the parser's own errors propagate for the caller to word."""
    run.config = parser.parse_object(config_tree(run, base, runs_dir, extra))
    check_values(run.config, run.name)
    run.text = parser.dump(run.config, skip_none=False)
    hidden, layers = run.config["model.hidden_size"], run.config["model.num_layers"]
    tokens = run.config["data.batch_size"] * run.config["data.seq_len"]
    steps = run.config["trainer.max_steps"]
    steps = steps if steps and steps > 0 else 1000
    # LSTM cost per token grows as layers x H^2; the constant stands for fixed costs.
    run.work = float(tokens * layers * hidden * hidden)
    run.cost = float(steps * (run.work + tokens * 4096))


def check_values(config, where: str) -> None:
    """What the parser's types do not check (the data's cross-argument rules, which its
    construction checks without loading anything) and what would otherwise fail only
    once the run starts: a missing data file, a ``data.steps_per_batch`` that does not
    divide the step counts. The model's ranges are types on its arguments: the parser
    checked them."""
    try:
        SequenceDataModule(**config["data"].as_dict())  # checks arguments, loads nothing
        data = config["data"]
        check_source(data["source"], data["path"], data["token_dtype"])
        check_steps_per_batch(config)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_steps_per_batch(config) -> None:
    """An explicit ``data.steps_per_batch`` against the step counts the config gives (the
    epoch's length needs the data: the run checks it)."""
    requested = config["data.steps_per_batch"]
    if requested == "auto":
        return
    trainer, world = config["trainer"], world_size(config)
    only_one = f"one process (under DDP, {world})" if world > 1 else None
    if trainer["max_steps"] in (None, -1) or trainer["max_epochs"] not in (None, -1):
        only_one = "trainer.max_steps and no trainer.max_epochs (the schedule counts steps)"
    counts = {"trainer.max_steps": trainer["max_steps"]}
    if trainer["log_every_n_steps"]:
        counts["trainer.log_every_n_steps"] = trainer["log_every_n_steps"]
    if isinstance(trainer["val_check_interval"], int):
        counts["trainer.val_check_interval"] = trainer["val_check_interval"]
    if config.get("checkpoint.every_n_train_steps"):
        counts["checkpoint.every_n_train_steps"] = config["checkpoint.every_n_train_steps"]
    resolve_steps_per_batch(requested, counts if only_one is None else {}, only_one)


def world_size(config) -> int:
    """The processes one run trains on: devices x nodes (DDP when above 1)."""
    devices = config["trainer.devices"]
    return (devices if isinstance(devices, int) else 1) * (config["trainer.num_nodes"] or 1)


# --- the run's folder: skip, resume, refuse ----------------------------------------------


CHECKPOINT = "last.ckpt"


class CheckpointError(Exception):
    """A checkpoint in a run's folder cannot be read safely; the message names it."""


def checkpoints(run_dir: Path) -> list[Path]:
    """What a killed or requeued run left: ``last.ckpt`` (periodic; ``last-vN.ckpt``
    where Lightning versioned it) and ``hpc_ckpt_N.ckpt`` (saved on SIGUSR1 before a
    SLURM requeue)."""
    found = [*run_dir.glob("last*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    return sorted(p for p in found if p.is_file())


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint holds, read by ``checkpoints.load``: a file planted in a
    run folder is read as data, never executed; mmap: no tensor is read into memory."""
    try:
        step = load_checkpoint(path, mmap=True, what="checkpoint").get("global_step")
    except Unreadable as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({err.cause}); delete it to rerun the run "
            "from the start"
        ) from None
    if not isinstance(step, int):
        raise CheckpointError(f"{path} holds no global step; delete it to rerun the run")
    return step


def newest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint furthest into training and its step; CheckpointError if one is unreadable."""
    steps = [(checkpoint_step(p), p) for p in checkpoints(run_dir)]
    if not steps:
        return None
    step, path = max(steps, key=lambda sp: (sp[0], sp[1].name))
    return path, step


def read_config(run_dir: Path) -> str | None:
    """The folder's config.yaml; None when missing or damaged (the sweep rewrites it)."""
    try:
        text = (run_dir / CONFIG).read_text(encoding="utf-8")
        return text if isinstance(yaml.safe_load(text), dict) else None
    except (FileNotFoundError, yaml.YAMLError):
        return None


def read_result(run_dir: Path) -> dict | None:
    """The run's result, None when there is none; ResultError when it is unreadable."""
    path = run_dir / results.FILE
    return results.read(path) if path.exists() else None


def plan(run: Run) -> None:
    """Decide ``run.action`` and ``run.note`` from what its folder holds now."""
    try:
        decide(run)
    except OSError as err:  # e.g. a file where its folder should be
        run.action, run.note = "fail", f"cannot read {err.filename or run.dir} ({err.strerror})"


def decide(run: Run) -> None:
    try:
        result = read_result(run.dir)
    except (results.ResultError, OSError) as err:
        run.action, run.note = unreadable_result(run, err)
        return
    written = read_config(run.dir)
    if result is not None and not same_config(result, run.text, written):
        run.action, run.note = changed(run, written)
    elif result is not None:
        run.action, run.note = with_result(run, result, written)
    elif not checkpoints(run.dir):
        run.action, run.note = "run", ""
    elif written is not None and differing(written, run.text):
        run.action, run.note = changed(run, written)
    else:
        run.action, run.note = from_checkpoint(run, "from its checkpoint")


def unreadable_result(run: Run, err: Exception) -> tuple[str, str]:
    where = run.dir / results.FILE
    if run.force:
        return "run", f"{where} is unreadable ({err}): --force reruns it"
    return "hold", f"{where} is unreadable ({err}); move it away, or use --force, to rerun it"


def changed(run: Run, written: str | None) -> tuple[str, str]:
    what = changes(written, run.text)
    if run.force:
        return "run", f"config changed{what}: --force reruns it"
    return "refuse", (
        f"its config changed since it ran{what}; rerun it with --force, or give the "
        "changed run a new label"
    )


def with_result(run: Run, result: dict, written: str | None) -> tuple[str, str]:
    """A run with a result of this same config."""
    missing = "; config.yaml missing or damaged: written again" if written is None else ""
    if result["status"] == "completed":
        return "skip", f"completed{missing}"
    if run.retry_failed and died(result) and checkpoints(run.dir):
        return from_checkpoint(run, "its worker died: from its checkpoint")
    if run.retry_failed:
        return "run", f"retrying a {result['status']} run"
    return "skip", f"{result['status']} (--retry_failed reruns it){missing}"


def from_checkpoint(run: Run, note: str) -> tuple[str, str]:
    """Resume, unless a checkpoint is unreadable (the run fails with that line) or is at
    the final step (result.json was lost: the end's metrics are not in a checkpoint, so
    the run trains again from the start rather than record a result without them)."""
    try:
        _, step = newest_checkpoint(run.dir)
    except CheckpointError as err:
        return ("run", f"{err}: --force reruns it") if run.force else ("fail", str(err))
    max_steps = run.config["trainer.max_steps"]
    if max_steps is not None and 0 < max_steps <= step:
        return "run", (
            f"its checkpoint is at the final step {step} but its result.json is missing: "
            "rerun from the start"
        )
    return "resume", note


def died(result: dict) -> bool:
    """Whether a failed result is a worker's death (not the run's own error)."""
    return result["status"] == "failed" and result.get("worker_death") is not None


def clear(run_dir: Path) -> None:
    """Remove a previous attempt's outputs, so a rerun does not mix with them."""
    for name in (results.FILE, "traceback.txt", "hparams.yaml"):
        (run_dir / name).unlink(missing_ok=True)
    for stale in [*checkpoints(run_dir), *run_dir.glob("events.out.tfevents.*")]:
        stale.unlink()


def lock(run_dir: Path) -> FileLock:
    """The run's lock: whoever holds it trains or records the run. An fcntl lock on a file
    in the run's folder, so it holds across processes and, on a shared filesystem, across
    nodes; the OS releases it when its holder dies, even by SIGKILL."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(run_dir / LOCK)
