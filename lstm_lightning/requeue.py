"""Preemption on SLURM: checkpoint between steps on SIGUSR1, then requeue the job.

SLURM sends SIGUSR1 before the time limit (``#SBATCH --signal=SIGUSR1@90``).
Lightning's own handler saves its checkpoint inside the signal handler, in the middle of
a step, where its progress counters disagree by one batch; a run resumed from it
validates one step early and logs its curves one step off. Here the signal only sets a
flag. At the end of the current batch, when the counters agree (the point where
``ModelCheckpoint`` saves too), every rank agrees to stop, the run saves
``hpc_ckpt_N.ckpt`` into its ``default_root_dir``, rank 0 runs ``scontrol requeue``, and
every rank raises ``Requeued``: the sweep records no result and exits, and the requeued
job resumes the run from that checkpoint. (Stopping with ``trainer.should_stop`` instead
would make Lightning log the last ``train/loss`` again at the stop step.)
"""

from __future__ import annotations

import os
import signal
import subprocess

from lightning.pytorch.callbacks import Callback


class Requeued(Exception):
    """This process checkpointed its run and asked SLURM to requeue its job: exit."""


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` inside an array."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


class RequeueOnSignal(Callback):
    """On SIGUSR1: at the next batch end, checkpoint, requeue the SLURM job, stop."""

    def __init__(self) -> None:
        self.signalled = False

    def _flag(self, signum, frame) -> None:
        self.signalled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self.signalled = False
        self._previous = signal.signal(signal.SIGUSR1, self._flag)

    def on_train_end(self, trainer, pl_module) -> None:
        signal.signal(signal.SIGUSR1, self._previous)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if hasattr(self, "_previous"):  # Requeued (or a failure) skips on_train_end
            signal.signal(signal.SIGUSR1, self._previous)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Ranks may see the signal a batch apart: stop when any rank has seen it.
        if not trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            return
        # _CheckpointConnector.hpc_save_path: the next free hpc_ckpt_N.ckpt in the folder,
        # where Lightning looks on restart; checked against Lightning 2.6.6
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            job = slurm_job_id()
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"scontrol requeue {job} failed: {done.stderr.strip()}")
            print(f"[requeue] saved {path}; requeued SLURM job {job}", flush=True)
        raise Requeued(path)
