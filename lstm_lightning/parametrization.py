"""The standard parametrization (SP) and the Maximal Update Parametrization (muP).

Reference: Yang et al. 2022, "Tensor Programs V", Table 3, in the MuReadout form used
by microsoft/mup (a 1/m multiplier on the readout instead of a 1/fan_in^2 init).

Width multiplier ``m = hidden_size / base_hidden_size``. At ``m == 1`` muP and SP build
the same model and the same optimizer. ``eta`` is ``learning_rate``, ``lam`` is
``weight_decay``, ``s`` is ``init_std``.

Rules, per parameter class (muP column; SP is the same with every multiplier 1 and the
readout as in the "SP" row):

| class  | parameters (this model)              | init std                | forward mult          | SGD lr   | SGD wd  | Adam/AdamW lr | Adam/AdamW wd |
|--------|--------------------------------------|-------------------------|-----------------------|----------|---------|---------------|---------------|
| input  | embedding.weight, every LSTM bias    | s (embedding); 0 (bias, | embedding_mult on the | eta * m  | lam / m | eta           | lam           |
|        |                                      | forget gate forget_bias)| embedding output      |          |         |               |               |
| hidden | layers.i.weight_ih_l0, weight_hh_l0  | s / sqrt(fan_in)        | 1                     | eta * r  | lam / r | eta / m_in    | lam * m_in    |
| output | readout.weight                       | s / sqrt(fan_in / m)    | output_mult / m       | eta * m  | lam / m | eta           | lam           |
| fixed  | readout.bias                         | 0                       | 1                     | eta      | lam     | eta           | lam           |
| SP     | readout.weight under SP              | s / sqrt(fan_in)        | output_mult           | eta      | lam     | eta           | lam           |

``m_in`` and ``m_out`` are the width multipliers of a matrix's fan-in and fan-out
dimensions, ``r = m_out / m_in`` (1 for every matrix of this model). ``readout_zero_init``
sets the readout weight to 0 in both parametrizations. Adam and AdamW are treated alike,
as microsoft/mup 1.0 does (its MuAdamW scales weight decay like MuAdam).

On top of the lr column, each class's learning rate is multiplied by its own model key,
default 1 (tuned on a narrow proxy and carried to the wide model, as TP5 tunes the input
and output learning rates apart): ``input_lr_mult`` (input), ``hidden_lr_mult``
(hidden), ``output_lr_mult`` (output); the fixed class has none. They scale the lr
only: the wd column stands (AdamW, which decays by lr * wd, decays that class faster).
With ``eps_scaling`` (TP5 Appendix B.3; Everett et al. 2024), Adam's epsilon of each
parameter is multiplied by that parameter's Adam lr column (without the class
multiplier): a hidden matrix, whose gradient and update shrink as 1 / m_in, gets
eps / m_in, so eps stays as negligible against the gradient's second-moment root at
every width as at the base. Under SP, and for SGD, it changes nothing.

The class of a parameter is not read off its name: it is derived, as in mup's
``set_base_shapes``, from which dimensions change when the width changes. A parameter
with no width dimension is "fixed", one with one is vector-like (input or output), one
with two is matrix-like (hidden). So a fixed ``embedding_size`` turns the first layer's
``weight_ih`` vector-like, as it must. In every class the product lr * wd of SGD and
Adam does not depend on width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Parametrization = Literal["sp", "mup"]
OptimizerName = Literal["sgd", "adam", "adamw"]


@dataclass(frozen=True)
class ParamShape:
    """How one parameter's dimensions scale: ``mults[d] = dim / base_dim`` for width dims."""

    name: str
    shape: tuple[int, ...]
    width_dims: tuple[bool, ...]  # True where the dimension grows with hidden_size
    mults: tuple[float, ...]

    @property
    def ninf(self) -> int:
        return sum(self.width_dims)

    @property
    def kind(self) -> str:
        """'fixed', 'vector' or 'matrix', by the number of width dimensions (as mup)."""
        return {0: "fixed", 1: "vector", 2: "matrix"}[self.ninf]

    @property
    def width_mult(self) -> float:
        # mup's InfShape.width_mult: the last width dimension, i.e. fan-in for a matrix.
        for dim in reversed(range(len(self.shape))):
            if self.width_dims[dim]:
                return self.mults[dim]
        return 1.0

    @property
    def fanin_fanout_ratio(self) -> float:
        m_out, m_in = self.mults[0], self.mults[1]
        return m_in / m_out


def width_mult(hidden_size: int, base_hidden_size: int) -> float:
    """``m = hidden_size / base_hidden_size``: 1 at the base width."""
    return hidden_size / base_hidden_size


def infer_shapes(
    build: Callable[[int], nn.Module], hidden_size: int, base_hidden_size: int
) -> dict[str, ParamShape]:
    """Classify every parameter of ``build(hidden_size)`` against the base width.

    ``build(h)`` returns the model at width ``h``. Models at the base width and at twice
    it are built on the meta device (no memory, no RNG draws) to find which dimensions
    scale with width, even when ``hidden_size == base_hidden_size``.
    """
    with torch.device("meta"):
        base = dict(build(base_hidden_size).named_parameters())
        delta = dict(build(2 * base_hidden_size).named_parameters())
        target = dict(build(hidden_size).named_parameters())
    shapes = {}
    for name, p in target.items():
        widths = tuple(b != d for b, d in zip(base[name].shape, delta[name].shape))
        mults = tuple(n / b for n, b in zip(p.shape, base[name].shape))
        if sum(widths) > 2:
            raise ValueError(f"parameter {name} has more than 2 width dimensions: {p.shape}")
        shapes[name] = ParamShape(name, tuple(p.shape), widths, mults)
    return shapes


LR_MULT_CLASSES = ("input", "hidden", "output")  # each has a model key <class>_lr_mult


def param_class(shape: ParamShape, readout: bool) -> str:
    """The table's class: 'input', 'hidden', 'output' or 'fixed'. ``readout``: whether
    the parameter belongs to the readout layer (only a vector-like one is 'output')."""
    if shape.kind == "vector":
        return "output" if readout else "input"
    return {"fixed": "fixed", "matrix": "hidden"}[shape.kind]


def lr_wd_multipliers(
    shape: ParamShape, optimizer: OptimizerName, parametrization: Parametrization
) -> tuple[float, float]:
    """Return (lr multiplier, weight-decay multiplier) for one parameter; see the table."""
    if parametrization == "sp" or shape.kind == "fixed":
        return 1.0, 1.0
    if optimizer == "sgd":
        if shape.kind == "vector":
            return shape.width_mult, 1.0 / shape.width_mult
        ratio = shape.fanin_fanout_ratio
        return 1.0 / ratio, ratio
    if shape.kind == "vector":  # adam, adamw
        return 1.0, 1.0
    return 1.0 / shape.width_mult, shape.width_mult


@torch.no_grad()
def init_parameters(
    model: nn.Module,
    parametrization: Parametrization,
    m: float,
    init_std: float,
    forget_bias: float,
    readout_zero_init: bool,
) -> None:
    """Initialise ``model`` (an ``LSTMLM``) in place by the table above.

    SP and muP draw the same random numbers in the same order, so at ``m == 1`` they
    give bit-identical weights under the same seed.
    """
    nn.init.normal_(model.embedding.weight, std=init_std)
    for lstm in model.layers:
        for name, p in lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.normal_(p, std=init_std / math.sqrt(p.shape[1]))
            else:
                p.zero_()
        # PyTorch gate order is (input, forget, cell, output): rows [H, 2H) of bias_ih.
        hidden = lstm.hidden_size
        lstm.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
    readout = model.readout.weight  # (V, H)
    fan_in = readout.shape[1] / (m if parametrization == "mup" else 1.0)
    nn.init.normal_(readout, std=init_std / math.sqrt(fan_in))
    if readout_zero_init:
        readout.zero_()
    model.readout.bias.zero_()


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    shapes: dict[str, ParamShape],
    optimizer: OptimizerName,
    parametrization: Parametrization,
    learning_rate: float,
    weight_decay: float,
    readout: Collection[str] = (),
    class_lr_mults: Mapping[str, float] | None = None,
    eps: float | None = None,
) -> list[dict]:
    """Group parameters by (kind, lr multiplier, wd multiplier), in first-seen order.

    ``readout`` names the readout's parameters; ``class_lr_mults`` maps a class of
    ``LR_MULT_CLASSES`` to its lr multiplier (missing: 1). ``eps`` given: each group
    carries its own Adam epsilon, ``eps`` times its lr column (``eps_scaling``). Each
    group carries its own ``lr`` and ``weight_decay``; a LambdaLR schedule then scales
    every group's lr by the same factor, so the muP ratios survive.
    """
    mults = dict(class_lr_mults or {})
    groups: dict[tuple, dict] = {}
    for name, p in named_params:
        shape = shapes[name]
        lr_mult, wd_mult = lr_wd_multipliers(shape, optimizer, parametrization)
        total = lr_mult * mults.get(param_class(shape, name in readout), 1.0)
        # With every class multiplier 1 the key, and so the groups, are as without them.
        key = (shape.kind, total, wd_mult, lr_mult if eps is not None else None)
        group = groups.setdefault(
            key,
            {
                "params": [],
                "names": [],
                "kind": shape.kind,
                "lr": learning_rate * total,
                "weight_decay": weight_decay * wd_mult,
            },
        )
        if eps is not None and optimizer != "sgd":
            group["eps"] = eps * lr_mult
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(
    groups: list[dict],
    optimizer: OptimizerName,
    learning_rate: float,
    momentum: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.Optimizer:
    """An ordinary torch optimizer over muP-scaled parameter groups (no subclass)."""
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum)
    impl = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    return impl(groups, lr=learning_rate, betas=betas, eps=eps)
