"""Magnitude pruning: unstructured (weights set to zero) and structured (channels removed).

Unstructured pruning keeps every tensor's shape and only zeroes the smallest weights; it
shrinks a model only after sparse storage or compression, and speeds it up only on runtimes
with sparse kernels. Structured pruning physically removes whole output channels, so the
result is a smaller *dense* network that every runtime (TFLite, ORT) runs faster.

Structured pruning uses Torch-Pruning (``pip install torch-pruning``): its dependency graph
(DepGraph) finds every layer coupled to a removed channel - the next layer's input
channels, BatchNorm statistics, both branches of a residual add, depthwise convolutions
(where in == out channels) and concatenations - and prunes them together, so the network
stays consistent. Hand-written channel surgery gets exactly those couplings wrong.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edgekit.compress.data import TrainData
from edgekit.compress.errors import RecipeError, require
from edgekit.compress.metrics import count_macs, count_params, run_with_hooks, sparsity_report
from edgekit.compress.training import LossFn, check_epochs, finetune_loss, fit

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


class PruneKind(str, Enum):
    """Which weights go."""

    UNSTRUCTURED = "unstructured"  # individual weights zeroed; shapes unchanged
    STRUCTURED = "structured"  # whole channels removed; dense and smaller


class PruneScope(str, Enum):
    """How the ratio is spread over layers."""

    GLOBAL = "global"  # one magnitude threshold over all layers: small layers keep more
    LAYER = "layer"  # the same ratio in every layer


@dataclass(frozen=True)
class PruneOptions:
    """Options of :func:`apply`.

    Attributes:
        kind: unstructured (zeros) or structured (channels removed).
        ratio: in (0, 1). Unstructured: target fraction of zero weights. Structured: the
            fraction of output channels removed from each prunable layer.
        scope: ``None`` picks the usual default: global for unstructured (layers with
            redundant weights give more), per-layer for structured (global channel
            ranking can empty a whole layer).
        steps: number of pruning steps; the ratio is reached gradually (cubic schedule
            for unstructured, linear in Torch-Pruning for structured), each step followed
            by ``finetune_epochs`` of fine-tuning.
        finetune_epochs: epochs of fine-tuning after each step; needs labelled data or a
            teacher. 0 = prune only. ``None`` = not chosen: the build fine-tunes for
            :data:`~edgekit.compress.training.DEFAULT_FINETUNE_EPOCHS` when the model comes
            with training data, else 0; this library on its own reads ``None`` as 0.
        lr: Adam learning rate of the fine-tuning.
        round_to: structured only: keep a multiple of this many channels in each layer
            (4 or 8 match the SIMD width of ARM NEON / x86 kernels). ``None`` = no rounding.
        ignored_layers: names of modules never pruned. ``None`` = the layer that produces
            the model output (the classifier), whose width is the model's output size.
    """

    kind: PruneKind = PruneKind.STRUCTURED
    ratio: float = 0.5
    scope: PruneScope | None = None
    steps: int = 1
    finetune_epochs: int | None = None
    lr: float = 1e-3
    round_to: int | None = None
    ignored_layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Coerce strings from TOML/CLI into the enums, then reject bad values up front.
        object.__setattr__(self, "kind", _enum(PruneKind, self.kind, "kind"))
        if self.scope is not None:
            object.__setattr__(self, "scope", _enum(PruneScope, self.scope, "scope"))
        if self.ignored_layers is not None:
            object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))
        check_options(self)

    @property
    def resolved_scope(self) -> PruneScope:
        """The scope given, or the default for ``kind``."""
        if self.scope is not None:
            return self.scope
        return PruneScope.GLOBAL if self.kind is PruneKind.UNSTRUCTURED else PruneScope.LAYER


def _enum(cls: type[Enum], value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise RecipeError(f"prune: {field}={value!r} is not one of {allowed}") from None


def check_options(o: PruneOptions) -> None:
    """Reject option values that can never work (no model needed)."""
    if not 0.0 < float(o.ratio) < 1.0:
        raise RecipeError(f"prune: ratio={o.ratio} is out of range; give a fraction in (0, 1), "
                          "e.g. 0.3 to remove 30% of the channels/weights")
    if o.steps < 1:
        raise RecipeError(f"prune: steps={o.steps} must be >= 1")
    check_epochs("prune", o.finetune_epochs)
    if o.lr <= 0:
        raise RecipeError(f"prune: lr={o.lr} must be > 0")
    if o.round_to is not None and o.round_to < 1:
        raise RecipeError(f"prune: round_to={o.round_to} must be a channel count >= 1")
    if o.round_to is not None and o.kind is PruneKind.UNSTRUCTURED:
        raise RecipeError("prune: round_to only applies to structured pruning; drop it or "
                          "use kind='structured'")


def validate(options: PruneOptions, model: nn.Module, data: TrainData | None = None, *,
             example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
    """Check ``options`` against this model and data before any work."""
    check_options(options)
    names = dict(model.named_modules())
    for name in options.ignored_layers or ():
        if name not in names:
            raise RecipeError(f"prune: ignored layer {name!r} is not a module of the model; "
                              f"known prunable layers: {', '.join(_prunable_names(model)[:8])}")
    if not _prunable_names(model):
        raise RecipeError("prune needs nn.Conv*/nn.Linear layers; this model has none")
    if (options.finetune_epochs or 0) > 0 and data is None:
        raise RecipeError("prune: finetune_epochs > 0 needs training data (labelled, or inputs "
                          "only: the unpruned model then teaches); pass data or set "
                          "finetune_epochs=0")
    if options.kind is PruneKind.STRUCTURED and example_inputs is None and data is None:
        raise RecipeError("structured pruning traces the model and needs example inputs; "
                          "pass example_inputs or data")


def _prunable_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _PRUNABLE)]


def apply(model: nn.Module, options: PruneOptions, data: TrainData | None = None, *,
          teacher: nn.Module | None = None,
          example_inputs: tuple[torch.Tensor, ...] | None = None,
          ) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``model``; returns ``(pruned_model, report)``.

    The input model is not modified. ``teacher`` (default: ``model``, unpruned) supervises
    fine-tuning beside the labels, or alone when ``data`` has none
    (``training.finetune_loss``). ``example_inputs`` default to one sample of ``data.x_train``.
    """
    validate(options, model, data, example_inputs=example_inputs)
    if example_inputs is None:
        assert data is not None
        example_inputs = data.example_inputs()
    pruned = copy.deepcopy(model).eval()
    before = {"params": count_params(pruned), "macs": count_macs(pruned, example_inputs)}
    loss = None
    if (options.finetune_epochs or 0) > 0:
        assert data is not None
        loss = finetune_loss(data, teacher if teacher is not None else model)
    if options.kind is PruneKind.UNSTRUCTURED:
        history = _unstructured(pruned, options, data, loss)
    else:
        history = _structured(pruned, options, data, loss, example_inputs)
    report = {
        "options": _plain(asdict(options)),
        "params_before": before["params"], "params_after": count_params(pruned),
        "macs_before": before["macs"], "macs_after": count_macs(pruned, example_inputs),
        "sparsity": sparsity_report(pruned), "finetune_loss": history,
        "channels": per_layer_channels(pruned),
    }
    return pruned, report


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Enums to their string values, for JSON reports."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}


def _unstructured(model: nn.Module, o: PruneOptions, data: TrainData | None,
                  loss: LossFn | None) -> list[float]:
    """Prune to a cubic schedule of sparsities; masks stay on while fine-tuning so the
    pruned weights stay zero, and are made permanent (``prune.remove``) at the end."""
    ignored = set(o.ignored_layers or ())
    targets = [m for n, m in model.named_modules() if isinstance(m, _PRUNABLE) and n not in ignored]
    history: list[float] = []
    for step in range(1, o.steps + 1):
        # Zhu & Gupta (2017): prune fast while there is redundancy, slowly near the target.
        sparsity = o.ratio * (1.0 - (1.0 - step / o.steps) ** 3)
        if o.resolved_scope is PruneScope.GLOBAL:
            prune.global_unstructured([(m, "weight") for m in targets],
                                      pruning_method=prune.L1Unstructured, amount=sparsity)
        else:
            for m in targets:
                prune.l1_unstructured(m, "weight", amount=sparsity)
        if loss is not None and data is not None:
            history += fit(model, data, epochs=o.finetune_epochs, lr=o.lr, loss_fn=loss)
        # Fold the mask into the weight now: the next step re-ranks the folded weights, in
        # which earlier-pruned entries are exact zeros and therefore go first again.
        for m in targets:
            prune.remove(m, "weight")
    return history


def _structured(model: nn.Module, o: PruneOptions, data: TrainData | None, loss: LossFn | None,
                example_inputs: tuple[torch.Tensor, ...]) -> list[float]:
    """Remove channels with Torch-Pruning, ``steps`` times, fine-tuning in between."""
    tp = require("torch_pruning", "torch-pruning", "structured pruning")
    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
    pruner = pruner_cls(
        model, example_inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=o.ratio,
        iterative_steps=o.steps,
        global_pruning=o.resolved_scope is PruneScope.GLOBAL,
        ignored_layers=_ignored_modules(model, o, example_inputs),
        round_to=o.round_to,
    )
    history: list[float] = []
    for _ in range(o.steps):
        pruner.step()
        if loss is not None and data is not None:
            history += fit(model, data, epochs=o.finetune_epochs, lr=o.lr, loss_fn=loss)
    return history


def _ignored_modules(model: nn.Module, o: PruneOptions,
                     example_inputs: tuple[torch.Tensor, ...]) -> list[nn.Module]:
    if o.ignored_layers is not None:
        return [model.get_submodule(n) for n in o.ignored_layers]
    return [output_layer(model, example_inputs)]


def output_layer(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """The last Conv/Linear run in a forward pass: the layer whose output width is the
    model's output size (the classifier), which pruning must therefore keep whole."""
    order: list[nn.Module] = []
    run_with_hooks(model, [m for m in model.modules() if isinstance(m, _PRUNABLE)],
                   lambda mod, _i, _o: order.append(mod), example_inputs)
    if not order:
        raise RecipeError("prune needs nn.Conv*/nn.Linear layers; this model runs none")
    return order[-1]


def per_layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels / features of each Conv/Linear layer (to compare before/after)."""
    return {n: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, _PRUNABLE)}
