"""When a run has diverged, and what to tell its user.

The rule: a training loss diverges when it is NaN or infinite, or above the run's limit

    limit = min(100, 2 * max(first loss, ln(vocab_size)))   [nats per token]

that is, twice the worse of the loss of a uniform guess and the run's own first loss,
and never more than 100 nats (a probability of e^-100 per token: no model that is still
learning gets there). A loss that doubles past where training started does not come
back in any run we have seen; one at 2e6 (Adam or SGD at lr 1e6) is caught at its step.
The first loss counts so that a deliberately odd start (a large ``output_mult``) is not
stopped at step 0 unless it is absurd. The limit is fixed at the run's first step and
kept in its checkpoints, so a resumed run applies the same one. Testing a step costs one
Python comparison of the loss the step already reads.
"""

from __future__ import annotations

import math

LIMIT_NATS = 100.0  # the limit never exceeds this
MULTIPLIERS = ("output_mult", "embedding_mult", "init_std")  # scale the forward pass
LARGE = 4.0  # a multiplier this far above 1 is a suspect


def loss_limit(first_loss: float, vocab_size: int) -> float:
    """The run's limit, from its first training loss (a non-finite one counts as 0)."""
    first = first_loss if math.isfinite(first_loss) else 0.0
    return min(LIMIT_NATS, 2.0 * max(first, math.log(max(vocab_size, 2))))


def diverged(loss: float, limit: float) -> bool:
    """Whether ``loss`` breaks the rule (NaN compares false, so it diverges too)."""
    return not loss <= limit


def hint(hparams, step: int) -> str:
    """What to change: a multiplier set far above 1 (``MULTIPLIERS``) is named beside the
    learning rate; at step 0 no update has happened, so the learning rate is not named."""
    large = [f"model.{k} (now {hparams[k]:g})" for k in MULTIPLIERS if abs(hparams[k]) >= LARGE]
    if step == 0:
        suspects = large or [f"model.{k}" for k in MULTIPLIERS]
        return f"before any update: lower {' or '.join(suspects)}"
    return (
        f"lower {' or '.join(['model.learning_rate', *large])}, add warm-up "
        "(model.warmup_steps) or set trainer.gradient_clip_val"
    )
