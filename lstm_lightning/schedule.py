"""Learning-rate schedules as a factor on each parameter group's own learning rate.

``LambdaLR`` multiplies every group's initial lr by the same factor, so the muP ratios
between groups (see ``parametrization``) hold at every step.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "cosine", "linear"]


def lr_factor(step: int, schedule: Schedule, warmup_steps: int, total_steps: int) -> float:
    """Factor in [0, 1] at optimizer step ``step`` (0-based).

    Linear warm-up from 1/warmup_steps to 1 over ``warmup_steps`` steps, then constant,
    cosine to 0, or linear to 0 at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress
