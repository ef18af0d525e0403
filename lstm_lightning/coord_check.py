"""The coordinate check of microsoft/mup, for the LSTM language model.

For every parametrization, width and seed: build the model, take a few optimizer steps on
fixed batches (the same for every width) and, at each step t = 0..steps (t = 0 is the
initialisation), record on a fixed probe batch the mean |x| of every layer's activations
and the mean |x - x_at_init|. Under muP these stay the same size as the width grows (a
flat line in log-log); under SP the logits grow with width once training moves them.

The learning rate is constant (no warm-up, no decay) whatever the config says: the check
measures the size of the updates that a given learning rate makes.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch
from jsonargparse import ArgumentError

from lstm_lightning import subnormal
from lstm_lightning.config_checks import check_config_files, one_line
from lstm_lightning.data import SequenceDataModule
from lstm_lightning.errors import ConfigError, check
from lstm_lightning.files import write_atomic
from lstm_lightning.fit import parser_only
from lstm_lightning.module import LanguageModel, make_optimizer

PARAMETRIZATIONS = ("sp", "mup")
OPTIMIZERS = ("sgd", "adam", "adamw")
TOLERANCE = 0.15  # --check: every muP slope must lie within +-TOLERANCE
# Model keys the CLI sets from data.*: the check sets the vocabulary itself, and carries
# no state across batches.
LINKED = ("vocab_size", "carry_state")
COLUMNS = ("parametrization", "width", "seed", "step", "layer", "mean_abs", "mean_abs_delta")


def main(
    *,
    config: str | None = None,
    widths: str = "32,64,128,256,512",
    steps: int = 10,
    seeds: int = 3,
    parametrization: str = "sp,mup",
    optimizer: str = "adam",
    learning_rate: float | None = None,
    out: str = "coord_check",
    check: bool = False,
) -> int:
    """Coordinate check: activation sizes against width, under SP and muP (as microsoft/mup).

    Args:
        config: A YAML config like configs/lstm.yaml; its ``model:`` and ``data:``
            sections give the hyperparameters (default: the LanguageModel and
            SequenceDataModule defaults, on the synthetic source).
        widths: Comma-separated hidden sizes, at least two, e.g. ``32,64,128``.
        steps: Optimizer steps to take (activations are recorded after each, and at init).
            10 by default: muP's logits start at width^-1/2 by design, and at the model's
            lr and forget bias 0 five steps left that start visible at width 512 (muP
            logits slope -0.15); at 10 the updates dominate (0.003) and SP's still grow.
        seeds: Seeds per width (0 .. seeds-1); the plot and slopes average over them.
        parametrization: Comma-separated parametrizations to check: sp, mup or both.
        optimizer: sgd, adam or adamw (overrides the config).
        learning_rate: Base learning rate (default: the config's, else the model default).
        out: Folder for coord_check.csv and coord_check.png.
        check: Exit 1 when any muP slope at the last step lies outside +-0.15.
    """
    params, width_list = validate(widths, steps, seeds, parametrization, optimizer, out)
    model_kw, data_kw = load_config(config)
    try:  # before training, not after it
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out: cannot make {out}: {err.strerror or err}") from None
    model_kw["optimizer"] = optimizer
    if learning_rate is not None:
        model_kw["learning_rate"] = learning_rate
    batches, vocab_size = fixed_batches(data_kw, steps + 1)
    model_kw["vocab_size"] = vocab_size
    with subnormal.flushed(model_kw["flush_subnormals"]):  # as a Trainer's run would
        records = [
            r
            for p in params
            for w in width_list
            for seed in range(seeds)
            for r in measure(model_kw, p, w, seed, batches[:steps], batches[steps])
        ]
    write_outputs(Path(out), records)
    table = slopes(records)
    print(format_slopes(table))
    print(f"wrote {Path(out) / 'coord_check.csv'} and {Path(out) / 'coord_check.png'}")
    if not check:
        return 0
    return check_slopes(table)


# --- inputs ----------------------------------------------------------------------------


def validate(
    widths: str, steps: int, seeds: int, parametrization: str, optimizer: str, out: str = "."
) -> tuple[list[str], list[int]]:
    """Parsed (parametrizations, widths); a ConfigError naming the flag otherwise."""
    check(
        not Path(out).exists() or Path(out).is_dir(),
        f"--out: {out} is a file; name a folder for coord_check.csv and coord_check.png",
    )
    params = [p.strip() for p in parametrization.split(",") if p.strip()]
    bad = [p for p in params if p not in PARAMETRIZATIONS]
    check(
        bool(params) and not bad,
        f"--parametrization: unknown {', '.join(bad) or '(empty)'}; use sp, mup or sp,mup",
    )
    check(optimizer in OPTIMIZERS, f"--optimizer: unknown {optimizer!r}; use sgd, adam or adamw")
    try:
        width_list = [int(w) for w in widths.split(",")]
    except ValueError:
        width_list = [0]
    check(
        all(w >= 1 for w in width_list),
        f"--widths: {widths!r} must be comma-separated positive integers, e.g. 32,64,128",
    )
    check(
        len(set(width_list)) >= 2,
        f"--widths: {widths!r} needs at least 2 distinct widths to fit a slope",
    )
    check(steps >= 1, f"--steps must be at least 1, got {steps}")
    check(seeds >= 1, f"--seeds must be at least 1, got {seeds}")
    return list(dict.fromkeys(params)), sorted(set(width_list))


def load_config(path: str | None) -> tuple[dict, dict]:
    """(model kwargs, data kwargs) as ``cli.py fit --config path`` would build them: the
    same parser, so the same keys, types, range checks and defaults."""
    args = [] if path is None else ["--config", path]
    try:
        check_config_files(args)
        config = parser_only().parse_args(args)
    except (ConfigError, ArgumentError) as err:
        raise ConfigError(f"--config: {one_line(err).removeprefix('--config: ')}") from None
    model = {k: v for k, v in config.model.items() if k not in LINKED}
    return model, dict(config.data.items())


def fixed_batches(data_kw: dict, n: int) -> tuple[list[torch.Tensor], int]:
    """The first ``n`` training batches (the same for every width) and the vocab size."""
    dm = SequenceDataModule(**data_kw)
    dm.trainer = None
    batches = []
    for stack in dm.train_dataloader():
        # (B, T+1), or a (K, B, T+1) stack of K consecutive batches (data.steps_per_batch)
        for batch in stack if stack.dim() == 3 else [stack]:
            batches.append(batch)
            if len(batches) == n:
                return batches, dm.vocab_size
    raise ConfigError(f"--steps: the train split has only {len(batches)} batches, need {n}")


# --- measurement -----------------------------------------------------------------------


def build(model_kw: dict, parametrization: str, width: int, steps: int):
    """(model, optimizer) at ``width``: constant learning rate, the module's param groups."""
    kw = dict(model_kw)  # base_hidden_size: the config's, else the model's default
    kw.update(
        hidden_size=width,
        parametrization=parametrization,
        schedule="constant",
        warmup_steps=0,
        carry_state=False,
    )
    model = LanguageModel(**kw)
    optimizer, _ = make_optimizer(model.hparams, model.net, model.shapes, steps)
    return model, optimizer


@torch.no_grad()
def activations(net: torch.nn.Module, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """{layer: activation} on ``probe`` (B, T+1): embedding (after embedding_mult), every
    LSTM's hidden output and cell state, and the logits. Eval mode: no dropout."""
    out: dict[str, torch.Tensor] = {}
    hooks = [
        net.layers[0].register_forward_pre_hook(
            lambda mod, args: out.__setitem__("embedding", args[0].clone())
        )
    ]
    for i, lstm in enumerate(net.layers):

        def hook(mod, args, res, i=i):
            out[f"lstm{i}"] = res[0].clone()  # (B, T, H)
            out[f"cell{i}"] = res[1][1].clone()  # (1, B, H): the final cell state

        hooks.append(lstm.register_forward_hook(hook))
    training = net.training
    net.eval()
    try:
        out["logits"], _ = net(probe[:, :-1])
    finally:
        net.train(training)
        for h in hooks:
            h.remove()
    return out


def measure(
    model_kw: dict,
    parametrization: str,
    width: int,
    seed: int,
    train_batches: list[torch.Tensor],
    probe: torch.Tensor,
) -> list[dict]:
    """Records (one per step and layer) of one run: mean |x| and mean |x - x_at_init|."""
    torch.manual_seed(seed)
    model, opt = build(model_kw, parametrization, width, len(train_batches))
    records: list[dict] = []
    init = None
    for step in range(len(train_batches) + 1):
        if step > 0:
            loss, _ = model.model_step(train_batches[step - 1], "train")
            opt.zero_grad()
            loss.backward()
            opt.step()
        acts = activations(model.net, probe)
        if init is None:
            init = acts
        for layer, x in acts.items():
            records.append(
                dict(
                    parametrization=parametrization,
                    width=width,
                    seed=seed,
                    step=step,
                    layer=layer,
                    mean_abs=x.abs().mean().item(),
                    mean_abs_delta=(x - init[layer]).abs().mean().item(),
                )
            )
    return records


# --- analysis and output ---------------------------------------------------------------


def seed_means(records: list[dict], key: str = "mean_abs") -> dict[tuple, float]:
    """{(parametrization, layer, step, width): ``key`` averaged over seeds}."""
    sums: dict[tuple, list[float]] = {}
    for r in records:
        k = (r["parametrization"], r["layer"], r["step"], r["width"])
        sums.setdefault(k, []).append(r[key])
    return {k: sum(v) / len(v) for k, v in sums.items()}


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def slopes(records: list[dict], step: int | None = None) -> dict[tuple[str, str], float]:
    """{(parametrization, layer): slope of log2(mean |x|) vs log2(width)} at ``step``
    (default: the last), seed-averaged. NaN where an activation is 0 or not finite."""
    step = max(r["step"] for r in records) if step is None else step
    means = seed_means(records)
    by_curve: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (p, layer, s, w), v in means.items():
        if s == step:
            by_curve.setdefault((p, layer), []).append((w, v))
    out = {}
    for key, points in by_curve.items():
        points.sort()
        if all(v > 0 and math.isfinite(v) for _, v in points):
            out[key] = fit_slope(
                [math.log2(w) for w, _ in points], [math.log2(v) for _, v in points]
            )
        else:
            out[key] = math.nan
    return out


def format_slopes(table: dict[tuple[str, str], float]) -> str:
    """A small text table: one row per layer, one column per parametrization."""
    params = list(dict.fromkeys(p for p, _ in table))
    layers = list(dict.fromkeys(layer for _, layer in table))
    lines = [
        "slope of log2 mean|x| vs log2 width, last step",
        f"{'layer':<10}" + "".join(f"{p:>9}" for p in params),
    ]
    for layer in layers:
        cells = "".join(f"{table.get((p, layer), math.nan):>9.3f}" for p in params)
        lines.append(f"{layer:<10}{cells}")
    return "\n".join(lines)


def check_slopes(table: dict[tuple[str, str], float], tolerance: float | None = None) -> int:
    """0 when every muP slope lies within +-tolerance, else 1 (printing the offenders)."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    bad = {
        layer: s
        for (p, layer), s in table.items()
        if p == "mup" and not abs(s) <= tolerance  # NaN fails too
    }
    if not any(p == "mup" for p, _ in table):
        print("check: no mup runs to check (add mup to --parametrization)")
        return 1
    for layer, s in bad.items():
        print(f"check failed: mup {layer} slope {s:.3f} is outside +-{tolerance}")
    if not bad:
        print(f"check passed: every mup slope is within +-{tolerance}")
    return 1 if bad else 0


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def plot(records: list[dict]) -> bytes:
    """PNG bytes: a row per layer, a column per parametrization, log-log mean |x| vs width,
    one line per step (colour from init to the last step), as mup's coord-check plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = seed_means(records)
    params = list(dict.fromkeys(r["parametrization"] for r in records))
    layers = list(dict.fromkeys(r["layer"] for r in records))
    steps = sorted({r["step"] for r in records})
    widths = sorted({r["width"] for r in records})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        len(layers),
        len(params),
        figsize=(4 * len(params), 2.4 * len(layers)),
        squeeze=False,
        sharex=True,
        sharey="row",
    )
    for row, layer in enumerate(layers):
        for col, p in enumerate(params):
            ax = axes[row][col]
            for step in steps:
                ys = [means[(p, layer, step, w)] for w in widths]
                color = cmap(step / max(steps[-1], 1))
                ax.plot(widths, ys, marker="o", ms=3, color=color, label=f"t={step}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_title(p)
            if col == 0:
                ax.set_ylabel(f"{layer}\nmean |x|")
            if row == len(layers) - 1:
                ax.set_xlabel("width")
        widen(axes[row][0])
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("coordinate check: mean |activation| vs width (seed mean)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def widen(ax, octaves: float = 2.0) -> None:
    """Show at least ``octaves`` powers of 2 on a log2 axis, so a flat line looks flat."""
    lo, hi = ax.get_ylim()
    span = math.log2(hi / lo)
    if span < octaves:
        pad = 2 ** ((octaves - span) / 2)
        ax.set_ylim(lo / pad, hi * pad)


def write_outputs(out: Path, records: list[dict]) -> None:
    write_atomic(out / "coord_check.csv", to_csv(records))
    write_atomic(out / "coord_check.png", plot(records))
