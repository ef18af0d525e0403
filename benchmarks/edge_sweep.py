"""A sweep that reaches the saturating edge (issue 13.4): ``python benchmarks/sweep.py --edge``.

muP Adam on data/stdlib.txt (configs/sweep_stdlib.yaml), widths 32 and 256, learning
rates 2^-6 .. 2^-2: two octaves either side of the optimum the study found there, 2^-4
at width 32 (docs/results.md). 100 steps each: 10 runs, a few minutes on 2 cores.
"""

WIDTHS = (32, 256)
STEPS = 100

EDGE_SWEEP = {
    "name": "EDGE_SWEEP",
    "subexperiments": [
        {
            "label": f"lstm_{width}d_adam_mup_lr{2.0**exponent:g}",
            "overrides": {
                "hidden_size": width,
                "learning_rate": 2.0**exponent,
                "max_steps": STEPS,
                "val_check_interval": STEPS,
            },
        }
        for width in WIDTHS
        for exponent in range(-6, -1)
    ],
}
EXPERIMENTS = EDGE_SWEEP
