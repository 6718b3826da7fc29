"""Low-rank factorization: W (out x in) ~ A (out x r) @ B (r x in), by truncated SVD.

An ``nn.Linear(in, out)`` becomes ``Linear(in, r, bias=False) -> Linear(r, out)`` (a 1x1
``Conv2d`` becomes two 1x1 convs). That saves parameters and MACs only when
``r * (in + out) < in * out``, so layers where it would not are left alone. Truncating the
SVD is the best rank-r approximation in the Frobenius norm (Eckart-Young); the error it
leaves is recovered by fine-tuning the factorized model (``finetune_epochs``, on the labels and
the teacher's outputs) or by a following distillation step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from edgekit.compress.data import TrainData
from edgekit.compress.errors import RecipeError
from edgekit.compress.training import check_epochs, finetune_loss, fit


class RankRule(str, Enum):
    """How each layer's rank r is chosen."""

    ENERGY = "energy"  # smallest r whose singular values keep this fraction of sum(s^2)
    RATIO = "ratio"  # r = ceil(value * full rank)


@dataclass(frozen=True)
class LowRankOptions:
    """Options of :func:`apply`.

    Attributes:
        rule: rank by retained energy or by a fraction of the full rank.
        value: in (0, 1): the energy fraction (e.g. 0.9) or the rank ratio (e.g. 0.5).
        skip: names of modules never factorized (e.g. a tiny classifier head).
        finetune_epochs: epochs of fine-tuning after factorizing; 0 = factorize only.
            ``None`` = not chosen: the build fine-tunes for
            :data:`~edgekit.compress.training.DEFAULT_FINETUNE_EPOCHS` when the model comes
            with training data, else 0; this library on its own reads ``None`` as 0.
        lr: Adam learning rate of the fine-tuning.
    """

    rule: RankRule = RankRule.ENERGY
    value: float = 0.9
    skip: tuple[str, ...] = ()
    finetune_epochs: int | None = None
    lr: float = 1e-3

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "rule", RankRule(self.rule))
        except ValueError:
            raise RecipeError(f"lowrank: rule={self.rule!r} is not 'energy' or 'ratio'") from None
        object.__setattr__(self, "skip", tuple(self.skip))
        if not 0.0 < float(self.value) < 1.0:
            raise RecipeError(f"lowrank: {self.rule.value}={self.value} is out of range; give a "
                              "fraction in (0, 1), e.g. energy 0.9 or ratio 0.5")
        check_epochs("lowrank", self.finetune_epochs)
        if not self.lr > 0:
            raise RecipeError(f"lowrank: lr={self.lr} must be > 0")


def eligible_layers(model: nn.Module) -> list[str]:
    """Names of the layers SVD can factorize: ``nn.Linear`` and ungrouped 1x1 ``nn.Conv2d``."""
    return [n for n, m in model.named_modules() if _eligible(m)]


def _eligible(m: nn.Module) -> bool:
    if type(m) is nn.Linear:  # exact type: subclasses (QAT, LoRA) carry extra state
        return True
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.groups == 1
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def validate(options: LowRankOptions, model: nn.Module, data: TrainData | None = None) -> None:
    """Reject a model with nothing to factorize, or unknown names in ``skip``."""
    names = eligible_layers(model)
    if not names:
        raise RecipeError("lowrank needs nn.Linear or 1x1 Conv2d layers; this model has none")
    if (options.finetune_epochs or 0) > 0 and data is None:
        raise RecipeError("lowrank: finetune_epochs > 0 needs training data; pass data or set finetune_epochs=0")
    modules = dict(model.named_modules())
    for name in options.skip:
        if name not in modules:
            raise RecipeError(f"lowrank: skip names {name!r}, which is not a module of the "
                              f"model; eligible layers: {', '.join(names[:8])}")


def choose_rank(s: torch.Tensor, options: LowRankOptions) -> int:
    """Rank for singular values ``s`` (descending) under the option's rule."""
    full = len(s)
    if options.rule is RankRule.RATIO:
        return max(1, min(full, math.ceil(options.value * full)))
    energy = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    # First index whose cumulative energy reaches the target; +1 turns it into a count.
    return min(full, int((energy < options.value - 1e-12).sum()) + 1)


def apply(model: nn.Module, options: LowRankOptions, data: TrainData | None = None, *,
          teacher: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Factorize a copy of ``model``, then fine-tune it for ``finetune_epochs`` on ``data``
    (its labels blended with ``teacher``'s outputs, see ``training.finetune_loss``;
    ``teacher`` defaults to ``model``, the model as it was before factorizing); returns
    ``(model, report)``."""
    validate(options, model, data)
    out = copy.deepcopy(model).eval()
    layers: dict[str, dict[str, Any]] = {}
    for name in eligible_layers(out):
        if name in options.skip:
            continue
        layers[name] = _factorize_layer(out, name, options)
    history: list[float] = []
    if (options.finetune_epochs or 0) > 0 and any(r["factorized"] for r in layers.values()):
        history = fit(out, data, epochs=options.finetune_epochs, lr=options.lr,
                      loss_fn=finetune_loss(data, teacher if teacher is not None else model))
    before = sum(r["params_before"] for r in layers.values())
    after = sum(r["params_after"] for r in layers.values())
    report = {
        "options": {"rule": options.rule.value, "value": options.value, "skip": list(options.skip),
                    "finetune_epochs": options.finetune_epochs, "lr": options.lr},
        "finetune_loss": history,
        "layers": layers,
        "factorized": sorted(n for n, r in layers.items() if r["factorized"]),
        "params_before": before, "params_after": after,
        "removed_fraction": (before - after) / before if before else 0.0,
    }
    return out, report


def _factorize_layer(model: nn.Module, name: str, options: LowRankOptions) -> dict[str, Any]:
    """Replace one layer in ``model`` when it saves parameters; its report entry."""
    layer = model.get_submodule(name)
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()  # out x in
    n_out, n_in = w.shape
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    rank = choose_rank(s, options)
    bias_n = n_out if layer.bias is not None else 0
    entry = {"rank": rank, "full_rank": len(s), "in": n_in, "out": n_out,
             "energy_kept": float((s[:rank] ** 2).sum() / (s ** 2).sum()),
             "params_before": n_in * n_out + bias_n}
    if rank * (n_in + n_out) >= n_in * n_out:
        # Two thinner layers would be at least as big as the original: keep it.
        return {**entry, "factorized": False, "params_after": entry["params_before"],
                "reason": f"rank {rank} saves nothing: r*(in+out) >= in*out"}
    root = torch.sqrt(s[:rank])
    first_w = (root[:, None] * vh[:rank]).float()  # r x in
    second_w = (u[:, :rank] * root[None, :]).float()  # out x r; sqrt split balances scales
    _set_submodule(model, name, _two_layers(layer, first_w, second_w))
    return {**entry, "factorized": True, "params_after": rank * (n_in + n_out) + bias_n}


def _two_layers(layer: nn.Module, first_w: torch.Tensor, second_w: torch.Tensor) -> nn.Sequential:
    rank, bias = first_w.shape[0], layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=bias)
    else:  # 1x1 conv: the first conv keeps stride and padding, the second is pointwise
        first = nn.Conv2d(layer.in_channels, rank, 1, stride=layer.stride,
                          padding=layer.padding, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=bias)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if bias:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
