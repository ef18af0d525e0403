"""The LightningModule: an ``LSTMLM`` under SP or muP, its optimizer, schedule and metrics.

Training uses manual optimization: a training batch is a stack of K batches (see
``lstm_lightning.data``) and ``training_step`` takes one optimizer step on each, in the
order Lightning's automatic optimization takes it on one batch: forward, zero_grad,
backward, gradient clipping, optimizer step, LR-scheduler step. Results are therefore
bitwise the same for every K on CPU. ``trainer.global_step`` counts optimizer steps, and
Lightning's logging counter is advanced per step too, so the log interval, the logged
step and the step of a validation all count optimizer steps, as with K = 1.

Lightning's ``manual_backward`` and ``LightningOptimizer.step`` cost ~0.15 ms a step in
hooks and wrappers (a width-16 step is ~6 ms). Where those would only call hooks that do
nothing (``idle_wrappers``: one process, 32-bit precision, no callback or profiler
listening), a step calls torch directly and counts itself in ``global_step`` through the
very callbacks ``LightningOptimizer.step`` calls; anywhere else it goes through Lightning.
The Lightning internals this needs are behind small functions in ``lstm_lightning.fused``,
and ``configure_callbacks`` adds its ``FusedSteps``, so any Trainer resolves K.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MinMetric
from torchmetrics.text import Perplexity

from lstm_lightning import checkpoints, clock, divergence, fused, ranges, resume_state, subnormal
from lstm_lightning import parametrization as par
from lstm_lightning.errors import check
from lstm_lightning.fused import idle_wrappers
from lstm_lightning.model import LSTMLM, State, detach_state
from lstm_lightning.ranges import (
    HalfOpenUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from lstm_lightning.schedule import Schedule, lr_factor


class LanguageModel(L.LightningModule):
    """An LSTM language model trained under the standard parametrization or muP.

    Args:
        vocab_size: Vocabulary size; the CLI links it from ``data.vocab_size``.
        hidden_size: LSTM width H: the dimension that muP scales.
        embedding_size: Embedding width E; None makes it equal to hidden_size, so it
            scales with width. A number fixes it across widths.
        num_layers: Stacked LSTM layers, one ``nn.LSTM`` each.
        dropout: Dropout on each LSTM layer's output (also before the readout).
        forget_bias: Initial bias of the forget gate (the other biases start at 0); 0
            since the μTransfer hazards found it better than 1 (docs/results.md; clear on
            prose); earlier configs pin 1.
        parametrization: ``sp`` (standard) or ``mup`` (maximal update); see
            ``lstm_lightning.parametrization`` for the rules.
        base_hidden_size: The width at which muP coincides with SP (width multiplier 1).
        init_std: Init scale s: embedding N(0, s^2), matrices N(0, s^2 / fan_in).
        embedding_mult: Constant multiplier on the embedding output.
        output_mult: Multiplier on the readout input (divided by the width multiplier
            under muP).
        readout_zero_init: Start the readout weight at zero.
        optimizer: ``sgd`` (with momentum), ``adam`` or ``adamw``.
        learning_rate: Base learning rate (eta); muP scales it per parameter group.
        momentum: SGD momentum.
        weight_decay: Base weight decay (lambda); muP scales it per parameter group.
        betas: Adam/AdamW betas.
        eps: Adam/AdamW epsilon.
        input_lr_mult: Learning-rate multiplier of the input class (the embedding and
            every LSTM bias), on top of the muP rules; see ``lstm_lightning.parametrization``.
        hidden_lr_mult: Learning-rate multiplier of the hidden class (the LSTM matrices),
            on top of the muP rules.
        output_lr_mult: Learning-rate multiplier of the output class (the readout
            weight), on top of the muP rules.
        eps_scaling: Scale Adam's epsilon per parameter like its muP learning rate (eps /
            m_in on hidden matrices), so it stays negligible at every width (TP5 Appendix
            B.3); nothing under SP or SGD.
        schedule: Learning-rate schedule after warm-up: constant, cosine or linear to 0
            at the last step.
        warmup_steps: Steps of linear learning-rate warm-up.
        carry_state: Carry the LSTM state across batches (TBPTT); the CLI sets it from
            ``data.batching``.
        flush_subnormals: Compute floats below 1.2e-38 as zero, on every CPU thread, while
            the run trains (``lstm_lightning.subnormal``): saturated gates make them, and
            some CPUs' slow path on them made such runs 20x slower. Nothing on a GPU.
    """

    def __init__(
        self,
        vocab_size: PositiveInt,
        hidden_size: PositiveInt = 128,
        embedding_size: PositiveInt | None = None,
        num_layers: PositiveInt = 1,
        dropout: HalfOpenUnitInterval = 0.0,
        forget_bias: float = 0.0,
        parametrization: par.Parametrization = "mup",
        base_hidden_size: PositiveInt = 32,
        init_std: NonNegativeFloat = 1.0,
        embedding_mult: float = 1.0,
        output_mult: float = 1.0,
        readout_zero_init: bool = False,
        optimizer: par.OptimizerName = "adam",
        learning_rate: NonNegativeFloat = 0.01,
        momentum: NonNegativeFloat = 0.9,
        weight_decay: NonNegativeFloat = 0.0,
        betas: tuple[HalfOpenUnitInterval, HalfOpenUnitInterval] = (0.9, 0.999),
        eps: PositiveFloat = 1e-8,
        input_lr_mult: PositiveFloat = 1.0,
        hidden_lr_mult: PositiveFloat = 1.0,
        output_lr_mult: PositiveFloat = 1.0,
        eps_scaling: bool = False,
        schedule: Schedule = "constant",
        warmup_steps: NonNegativeInt = 0,
        carry_state: bool = False,
        flush_subnormals: bool = True,
    ):
        super().__init__()
        # The parser checks the range types on every command-line path; a model built in
        # Python is checked here, with the same types and the same one-line error.
        ranges.check(LanguageModel, "model", locals())
        self.save_hyperparameters()
        self.width_mult = par.width_mult(hidden_size, base_hidden_size)
        self.net = self.build(hidden_size)
        self.shapes = par.infer_shapes(self.build, hidden_size, base_hidden_size)
        par.init_parameters(
            self.net, parametrization, self.width_mult, init_std, forget_bias, readout_zero_init
        )
        self.train_loss = MeanMetric()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_ppl, self.test_ppl = Perplexity(), Perplexity()
        self.val_loss_best = MinMetric()
        self._state: dict[str, State | None] = {}
        self.diverged_at_step: int | None = None
        self.loss_limit: float | None = None  # set at the first step: lstm_lightning.divergence
        self.last_val_step: int | None = None  # global step of the latest validation
        self._last_train_loss: torch.Tensor | None = None  # kept on device: no sync a step
        # Each training batch takes its own optimizer steps (training_step), one per
        # sub-batch; Lightning's automatic optimization would take one per batch.
        self.automatic_optimization = False
        # Lightning clips only under automatic optimization; the CLI moves
        # trainer.gradient_clip_val here and on_before_optimizer_step applies it.
        self.gradient_clip_val: float | None = None
        self._direct = False  # whether a step may skip Lightning's wrappers: on_train_start

    def build(self, hidden_size: int) -> LSTMLM:
        """The network at width ``hidden_size``, everything else as configured."""
        hp = self.hparams
        m = par.width_mult(hidden_size, hp.base_hidden_size)
        output_mult = hp.output_mult / m if hp.parametrization == "mup" else hp.output_mult
        return LSTMLM(
            hp.vocab_size,
            hidden_size,
            hp.embedding_size or hidden_size,
            hp.num_layers,
            hp.dropout,
            hp.embedding_mult,
            output_mult,
        )

    def forward(self, tokens: torch.Tensor, state: State | None = None):
        return self.net(tokens, state)

    # --- steps ---------------------------------------------------------------------

    def model_step(self, batch: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One shared step: batch (B, T+1) -> (mean NLL per token, logits (B, T, V))."""
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
        state = self._state.get(split) if self.hparams.carry_state else None
        logits, state = self.net(inputs, state)
        if self.hparams.carry_state:
            self._state[split] = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss, logits

    def training_step(self, stack: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        """One optimizer step per batch of the stack (K, B, T+1); the last step's loss, or
        None when a step diverged (the run then stops)."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        first, last = fused.logging_step(self.trainer), len(stack) - 1  # it lags a step
        loss = taken = None
        for i, batch in enumerate(stack):
            # Advance Lightning's logging counter per step (it adds 1 after the batch): the
            # logged step and a validation's step count steps, not batches. Every count of
            # steps is a multiple of K (data.steps_per_batch), so only a batch's last step
            # can be a logging step, and a validation follows a batch's last step.
            fused.set_logging_step(self.trainer, first + i)
            loss = self.optimizer_step_on(batch, optimizer, scheduler, may_log=i == last)
            if loss is None:
                break
            taken = loss
        if taken is not None:  # setting a module attribute costs ~20 us: once a batch
            self._last_train_loss = taken.detach()
        return loss

    def optimizer_step_on(
        self, batch: torch.Tensor, optimizer, scheduler, may_log: bool
    ) -> torch.Tensor | None:
        """Automatic optimization's step on one batch (B, T+1): its loss, or None if it diverged."""
        loss, _ = self.model_step(batch, "train")
        value = loss.item()  # the step's one host sync
        if self.loss_limit is None:  # the run's first step (see lstm_lightning.divergence)
            self.loss_limit = divergence.loss_limit(value, self.hparams.vocab_size)
        # Every rank takes the same decision, so DDP ranks skip the step together.
        stop = self.trainer.strategy.reduce_boolean_decision(
            divergence.diverged(value, self.loss_limit), all=False
        )
        if stop:
            self.diverge(value)
            return None  # no backward, no optimizer step: weights stay as they were
        # self.log costs about 1 ms a call, more than a width-16 step's arithmetic: call
        # it only on the steps whose metrics the logger writes (log_every_n_steps).
        if may_log and fused.logs_now(self.trainer):
            # sync_dist: under DDP the logged loss is the global batch's, not rank 0's half.
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        if self._direct:  # what the wrappers below do, minus hooks that would do nothing
            self.net.zero_grad()  # the optimizer's parameters; ~70 us sooner than its zero_grad
            loss.backward()
            fused.step_directly(optimizer, self.on_before_optimizer_step)  # counts global_step
        else:
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()  # counts trainer.global_step; calls on_before_optimizer_step
        scheduler.step()
        return loss

    def configure_callbacks(self) -> list[L.Callback]:
        """For any trainer, the CLI's or one built by hand: fused steps (``FusedSteps``
        resolves K, ``data.steps_per_batch``, in its ``setup``), checkpoints loaded as data
        (``SafeCheckpoints``), ``flush_subnormals`` (``subnormal.FlushSubnormals``) and
        the compute of every attempt (``clock.ComputeClock``); each unless the trainer has one."""
        wanted = (
            fused.FusedSteps,
            checkpoints.SafeCheckpoints,
            subnormal.FlushSubnormals,
            clock.ComputeClock,
        )
        have = self.trainer.callbacks
        return [kind() for kind in wanted if not any(isinstance(c, kind) for c in have)]

    def on_train_start(self) -> None:
        self._direct = idle_wrappers(self.trainer, self)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Where automatic optimization clips: after backward (and mixed precision's unscale).
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val)

    def diverge(self, loss: float) -> None:
        self.diverged_at_step = step = self.global_step
        self.trainer.should_stop = True
        if self.trainer.is_global_zero:
            print(
                f"diverged: train/loss is {loss:.6g} at step {step}; run stopped (its limit is "
                f"{self.loss_limit:.4g} nats; {divergence.hint(self.hparams, step)})",
                file=sys.stderr,
            )

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.eval_step(batch, "val", self.val_loss, self.val_ppl, batch_idx == 0)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.eval_step(batch, "test", self.test_loss, self.test_ppl, batch_idx == 0)

    def eval_step(self, batch, split: str, loss_metric, ppl_metric, first: bool = True) -> None:
        loss, logits = self.model_step(batch, split)
        targets = batch[:, 1:]
        loss_metric.update(loss, weight=targets.numel())
        ppl_metric.update(logits, targets)
        # Logging a metric object registers it: Lightning computes it from all its updates at
        # the epoch's end, then resets it. Once an epoch is enough; self.log costs ~1 ms a call.
        if first:
            self.log(f"{split}/loss", loss_metric, prog_bar=split == "val")
            self.log(f"{split}/ppl", ppl_metric)

    def loss_floor(self, split: str) -> float | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "loss_floor", {}).get(split)

    # --- epochs: TBPTT state and the best validation loss ---------------------------

    def on_train_epoch_start(self) -> None:
        # A new epoch starts from a zero state, unless this is the epoch a checkpoint
        # resumed in the middle of: then the carried state continues.
        if not getattr(self, "_resumed_state", False):
            self._state.pop("train", None)
        self._resumed_state = False

    def on_validation_epoch_start(self) -> None:
        self._state.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._state.pop("test", None)

    def on_train_end(self) -> None:
        if self._last_train_loss is not None:  # every rank calls this: a collective is safe
            self._last_train_loss = self.trainer.strategy.reduce(
                self._last_train_loss, reduce_op="mean"
            )

    @property
    def last_train_loss(self) -> float | None:
        """The training loss of the last step (not only of the last logged one)."""
        return None if self._last_train_loss is None else float(self._last_train_loss)

    def log_floor(self, split: str) -> None:
        """The data's exact loss floor beside the loss: a constant, logged once an epoch."""
        floor = self.loss_floor(split)
        if floor is not None:
            self.log(f"{split}/loss_floor", floor, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_floor("test")

    def on_validation_epoch_end(self) -> None:
        self.log_floor("val")
        if self.trainer.sanity_checking:
            return
        self.last_val_step = self.global_step
        self.val_loss_best.update(self.trainer.callback_metrics["val/loss"])
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)

    # --- checkpoints: what an exact resume needs beyond weights and optimizer (resume_state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        resume_state.save(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        resume_state.restore(self, checkpoint)

    def on_fit_end(self) -> None:
        """Write the HPARAMS summary once, with final metrics beside the hyperparameters."""
        if not isinstance(self.logger, TensorBoardLogger):
            return
        metrics = {
            f"hp/{k.replace('/', '_')}": float(v)
            for k, v in self.trainer.callback_metrics.items()
            if k in ("train/loss", "val/loss", "val/loss_best", "val/loss_floor")
        }
        if self.diverged_at_step is not None:
            metrics["hp/diverged_at_step"] = float(self.diverged_at_step)
        if metrics:
            self.logger.log_hyperparams(self.hparams_for_logging(), metrics)

    def hparams_for_logging(self) -> dict[str, Any]:
        params = dict(self.hparams)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            params.update({f"data/{k}": v for k, v in datamodule.hparams.items()})
        params["seed"] = torch.initial_seed()
        return params

    # --- optimization --------------------------------------------------------------

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(
            self.hparams, self.net, self.shapes, self.trainer.estimated_stepping_batches
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def make_optimizer(
    hp, net: torch.nn.Module, shapes: dict[str, par.ParamShape], total_steps: int | float | None
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The optimizer (muP's per-group learning rates and weight decays) and its schedule.

    ``hp`` is the model's hyperparameters (``LanguageModel.hparams``), ``shapes`` its
    ``par.infer_shapes`` of ``net``; ``total_steps`` is the run's optimizer steps, or None
    (or inf) when unbounded, which only a constant schedule allows.
    """
    groups = par.param_groups(
        net.named_parameters(),
        shapes,
        hp["optimizer"],
        hp["parametrization"],
        hp["learning_rate"],
        hp["weight_decay"],
        readout={f"readout.{name}" for name, _ in net.readout.named_parameters()},
        class_lr_mults={c: hp[f"{c}_lr_mult"] for c in par.LR_MULT_CLASSES},
        eps=hp["eps"] if hp["eps_scaling"] else None,
    )
    optimizer = par.build_optimizer(
        groups, hp["optimizer"], hp["learning_rate"], hp["momentum"], hp["betas"], hp["eps"]
    )
    bounded = total_steps is not None and math.isfinite(total_steps)
    check(
        hp["schedule"] == "constant" or bounded,
        f"model.schedule: {hp['schedule']} needs a finite run; set trainer.max_steps",
    )
    factor = functools.partial(
        lr_factor,
        schedule=hp["schedule"],
        warmup_steps=hp["warmup_steps"],
        total_steps=int(total_steps) if bounded else 0,  # a constant schedule never reads it
    )
    return optimizer, LambdaLR(optimizer, factor)
