"""Arm D of the μTransfer study (issue 14): SP at its default multipliers, only the learning
rate tuned, by an octave grid at the target width: what most users do.

One group, ``ARM_D``: a run per width and log2 learning rate, labelled
``w<width>_log2lr<k>`` (learning rate 2^k, seed 0 like the searches' trials). The grid
holds more octaves than a study runs: ``scripts/mutransfer_study.py`` picks the
pre-registered window with ``--labels`` (``docs/mutransfer_protocol.md``) and widens it by
an octave at a time while the best rate sits at its edge.

    python cli.py sweep --definitions configs/study/arm_d.py --experiments ARM_D \
        --labels w256_log2lr-8,w256_log2lr-7 --config BASE.yaml --runs_dir DIR
"""

WIDTHS = (8, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048)  # pilots' widths and the targets'
LOG2_LRS = tuple(range(-16, 0))  # 2^-16 .. 2^-1


def label(width: int, log2_lr: int) -> str:
    return f"w{width}_log2lr{log2_lr}"


ARM_D = {
    "name": "ARM_D",
    "subexperiments": [
        {
            "label": label(width, k),
            "overrides": {
                "hidden_size": width,
                "parametrization": "sp",
                "learning_rate": 2.0**k,
                "seed": 0,
            },
        }
        for width in WIDTHS
        for k in LOG2_LRS
    ],
}
EXPERIMENTS = ARM_D
