"""The μTransfer study's design, shared by its driver and its summary: the proxy searches,
the arms they feed, the verdicts drawn, the hazard experiments and the plan's costs."""

from __future__ import annotations

import math

# The proxy searches: study -> (parametrization, sampler, the setting with its trials).
# proxy_mup_tpe is arm A2's (docs/mutransfer_protocol.md, "Changes after the first run").
PROXIES = {
    "proxy_mup": ("mup", "random", "proxy_trials"),
    "proxy_sp": ("sp", "random", "proxy_trials"),
    "proxy_mup_tpe": ("mup", "tpe", "a2_trials"),
}


# The arms whose recipe is a proxy search's best trial, and that search's study.
ARM_PROXY = {"A": "proxy_mup", "B": "proxy_sp", "A2": "proxy_mup_tpe"}
MUP_ARMS = [arm for arm, proxy in ARM_PROXY.items() if PROXIES[proxy][0] == "mup"]  # A, A2
# The verdicts the summary draws: (arm, against).
VERDICTS = (("A", "C"), ("A", "D"), ("A2", "C"), ("A2", "D"), ("A2", "B"), ("A2", "B2"))


# The controlled experiments of the protocol's "If A does not win": a muP arm's recipe
# (``--hazard_arm``, A2 by default: the recipe that transfers; its proxy's best.yaml) at
# the first target width and the final seeds, with one factor changed. A change that
# leaves the recipe as it is (e.g. zero-init on when the best trial had it on) is
# skipped. Most informative first, as the study may stop between them.
# The first two put back SP's rule for one of the two classes where muP and SP differ
# under Adam (the readout's forward multiplier, the hidden matrices' lr): a key of
# WIDTH_SCALED is multiplied by m = width / proxy width, the recipe's value (default 1)
# times m. The rest are the protocol's list and a one-seed screening's flags
# (docs/mutransfer_protocol.md, "Changes after the first run").
WIDTH_SCALED = "x m"
HAZARDS = {  # name -> model keys set on the recipe (WIDTH_SCALED: the recipe's value x m)
    "readout_sp": {"output_mult": WIDTH_SCALED},
    "hidden_lr_sp": {"hidden_lr_mult": WIDTH_SCALED},
    "init_std_1": {"init_std": 1.0},
    "readout_zero_init_on": {"readout_zero_init": True},
    "readout_zero_init_off": {"readout_zero_init": False},
    "class_lr_mults_1": {"input_lr_mult": 1.0, "hidden_lr_mult": 1.0, "output_lr_mult": 1.0},
    "eps_scaling": {"eps_scaling": True},
    "eps_1e-12": {"eps": 1e-12},
    "forget_bias_0": {"forget_bias": 0.0},
    "forget_bias_2": {"forget_bias": 2.0},
    "output_mult_1": {"output_mult": 1.0},
    "warmup_20": {"warmup_steps": 20},
}
# CPU-seconds per training step, one thread, seq 64 x batch 32, one layer, Adam, stdlib
# characters, measured with the code of the session start (d2415c0); see
# docs/mutransfer_protocol.md. Other widths scale from the nearest by width^2.
SECONDS_PER_STEP = {32: 0.0098, 256: 0.1255, 512: 0.52}  # medians of 3
RUN_OVERHEAD = 4.0  # core-seconds per run: its start in a worker, checkpoints, events
VAL_STEPS = 22  # two validations of 32 batches, forward only: about 22 training steps' work


def seconds_per_step(width: int) -> float:
    if not width:
        return 0.0
    near = min(SECONDS_PER_STEP, key=lambda w: abs(math.log(w / width)))
    return SECONDS_PER_STEP[near] * (width / near) ** 2 if width != near else SECONDS_PER_STEP[near]
