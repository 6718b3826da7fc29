"""Quantization-aware training (QAT) and export to a QDQ ONNX model that ORT runs in int8.

Path used: eager-mode ``torch.ao.quantization`` (conv/linear + BN + ReLU fused with BN folded
in first, ``prepare_qat`` with per-channel symmetric int8 weight FakeQuantize and per-tensor
affine activation FakeQuantize), then ``torch.onnx.export(dynamo=False, opset_version=17)``:
the TorchScript exporter writes every fake-quantize op as a QuantizeLinear/DequantizeLinear
pair, which ORT's QDQ transformer fuses into QLinearConv / QGemm int8 kernels. We then fold
the weight QuantizeLinear into int8 initializers, so the file is ~4x smaller.

Why not PT2E (``prepare_qat_pt2e``): in torch 2.13 it is gone from ``torch.ao``; it lives in
``torchao`` (an extra, CUDA-oriented dependency), its XNNPACKQuantizer only in executorch or
torchao's private testing module, and the converted graph needs the dynamo exporter, which
emits opset 18. Measured on a digits CNN it did give a QDQ model ORT runs in int8
(QLinearConv, QGemm; 99.4% vs 99.7% for this path, same 2 epochs), so it is the fallback
once eager mode is removed from torch (in 2.13 it warns "deprecated" but works).

Limits of eager mode: only module outputs are observed, so functional ops (a residual
``x + y``, ``torch.cat``) run in float between a DQ and the next Q in ORT; a module instance
used twice shares one observer; BN/ReLU are fused only inside ``nn.Sequential`` containers.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from edgekit.compress.data import TrainData, as_tuple, call, take
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import evaluate_top1, output_cosine
from edgekit.compress.training import LossFn, fit, supervised_loss, teacher_loss

# Module sequences eager-mode fusion understands (BN folded into the conv/linear in eval).
_FUSE_PATTERNS = (
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
    (nn.Conv1d, nn.BatchNorm1d, nn.ReLU), (nn.Conv1d, nn.BatchNorm1d), (nn.Conv1d, nn.ReLU),
    (nn.Linear, nn.BatchNorm1d), (nn.Linear, nn.ReLU),
)


@dataclass(frozen=True)
class QatOptions:
    """Options of :func:`apply`.

    Attributes:
        epochs: fine-tuning epochs under fake quantization (>= 1).
        lr: Adam learning rate; small, since QAT starts from trained weights.
        activation_signed: int8 activations (XNNPACK, TFLite) when True, uint8 (NNAPI, and
            ORT's faster x86 kernels) when False. Weights are always int8.
        per_channel: one weight scale per output channel (better accuracy, what XNNPACK and
            ORT expect) or one per tensor (older NNAPI drivers).
        observer_epochs: epochs during which activation ranges are still updated; after
            that they are frozen so the last epochs train against fixed grids.
        calibration_samples: inputs run once before training to initialise the ranges.
    """

    epochs: int = 1
    lr: float = 1e-4
    activation_signed: bool = True
    per_channel: bool = True
    observer_epochs: int = 1
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise RecipeError(f"qat: epochs={self.epochs} must be >= 1")
        if self.lr <= 0:
            raise RecipeError(f"qat: lr={self.lr} must be > 0")
        if self.observer_epochs < 0 or self.calibration_samples < 1:
            raise RecipeError("qat: observer_epochs must be >= 0 and calibration_samples >= 1")


class QuantWrapped(nn.Module):
    """The model with a quantize stub on its (first) input: ORT's int8 kernels need the
    model input quantized too, and eager mode only observes what modules produce."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        tq = _tq()
        self.quant = tq.QuantStub()
        self.model = model

    def forward(self, x: torch.Tensor, *rest: Any) -> Any:
        """Fake-quantize the input, then run the wrapped model."""
        return self.model(self.quant(x), *rest)


def _tq() -> Any:
    """torch.ao.quantization, without its per-call deprecation warnings (see module doc)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch.ao.quantization as tq
    return tq


def validate(options: QatOptions, model: nn.Module, data: TrainData | None, *,
             teacher: nn.Module | None = None) -> None:
    """QAT trains, so it needs data; unlabelled data needs a teacher (default: the model)."""
    if data is None:
        raise RecipeError("qat needs data to calibrate and fine-tune; pass training data "
                          "or calibration inputs")
    if not as_tuple(data.x_train)[0].dtype.is_floating_point:
        raise RecipeError("qat needs float model inputs (integer inputs such as token ids "
                          "cannot be quantized at the input); use PTQ for this model")
    if not any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules()):
        raise RecipeError("qat needs nn.Conv*/nn.Linear layers to quantize; this model has none")


def qconfig(options: QatOptions) -> Any:
    """FakeQuantize config: int8 symmetric weights, affine 8-bit activations."""
    tq = _tq()
    if options.per_channel:
        weight = tq.FakeQuantize.with_args(
            observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        weight = tq.FakeQuantize.with_args(
            observer=tq.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    lo, hi, dtype = (-128, 127, torch.qint8) if options.activation_signed else (0, 255, torch.quint8)
    act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=lo,
                                    quant_max=hi, dtype=dtype, qscheme=torch.per_tensor_affine)
    return tq.QConfig(activation=act, weight=weight)


def fusable_groups(model: nn.Module) -> list[list[str]]:
    """Names of consecutive children of each nn.Sequential that match a fusion pattern."""
    groups: list[list[str]] = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = [n for n, _ in seq.named_children()]
        i = 0
        while i < len(names):
            for pattern in _FUSE_PATTERNS:
                kids = [seq.get_submodule(n) for n in names[i:i + len(pattern)]]
                if len(kids) == len(pattern) and all(type(k) is t for k, t in zip(kids, pattern)):
                    groups.append([f"{prefix}.{n}" if prefix else n
                                   for n in names[i:i + len(pattern)]])
                    i += len(pattern) - 1
                    break
            i += 1
    return groups


def prepare(model: nn.Module, options: QatOptions) -> QuantWrapped:
    """A copy of ``model`` with BN folded, conv/linear+ReLU fused and fake-quant inserted."""
    tq = _tq()
    fused = copy.deepcopy(model).eval()
    groups = fusable_groups(fused)
    if groups:
        # Eval-mode fusion folds BN into the weights: the exported graph has no BN left to
        # sit between a conv and its quantizer, which ORT could not fuse.
        fused = tq.fuse_modules(fused, groups)
    wrapped = QuantWrapped(fused)
    wrapped.qconfig = qconfig(options)
    wrapped.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(wrapped, inplace=True)
    _observe_pools(wrapped)
    return wrapped


_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)


def _observe_pools(model: nn.Module) -> None:
    """Fake-quantize average-pool outputs too (eager mode leaves them float). Without a
    quantizer there, ORT runs the pooling and the classifier Gemm after it in float;
    with it, they become QLinearGlobalAveragePool and QGemm, as in a PTQ model."""
    for mod in model.modules():
        if isinstance(mod, _POOLS) and not hasattr(mod, "activation_post_process"):
            mod.activation_post_process = model.qconfig.activation()
            mod.register_forward_hook(_pool_observer_hook)


def _pool_observer_hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
    return mod.activation_post_process(out)


def apply(model: nn.Module, options: QatOptions, data: TrainData | None, *,
          teacher: nn.Module | None = None) -> tuple[QuantWrapped, dict[str, Any]]:
    """Fine-tune a fake-quantized copy of ``model``; returns ``(qat_model, report)``.

    Labels supervise when present; otherwise ``teacher`` (default: ``model``) does. Export
    the result with :func:`export_qdq_onnx`, or hand :func:`to_float` to a PTQ converter.
    """
    validate(options, model, data, teacher=teacher)
    assert data is not None
    tq = _tq()
    qat = prepare(model, options)
    with torch.no_grad():  # initialise activation ranges before the first gradient step
        call(qat.train(), take(data.x_train, slice(0, options.calibration_samples)))
    loss = _loss(data, teacher if teacher is not None else model)
    observed = min(options.observer_epochs, options.epochs)
    history = fit(qat, data, epochs=observed, lr=options.lr, loss_fn=loss) if observed else []
    qat.apply(tq.disable_observer)
    if options.epochs > observed:
        history += fit(qat, data, epochs=options.epochs - observed, lr=options.lr, loss_fn=loss)
    qat.eval()
    x, y = data.eval_split()
    report: dict[str, Any] = {"options": asdict(options), "loss": history,
                              "fused": fusable_groups(model),
                              "cosine_to_float": output_cosine(qat, model, x)}
    if y is not None and data.resolved_task.value == "classification":
        report["top1_fake_quant"] = evaluate_top1(qat, x, y)
    return qat, report


def _loss(data: TrainData, teacher: nn.Module) -> LossFn:
    if data.has_labels:
        return supervised_loss(data.resolved_task)
    return teacher_loss(copy.deepcopy(teacher).eval(), data.resolved_task)


def to_float(qat_model: QuantWrapped) -> nn.Module:
    """A plain float model with the QAT weights snapped to their int8 grid (BN folded,
    no observers), for converters that quantize post-training (e.g. onnx2tf -> TFLite):
    re-quantizing these weights per channel lands on the same grid QAT trained for."""
    m = copy.deepcopy(qat_model).eval()
    for name, mod in list(m.named_modules()):
        if hasattr(mod, "weight_fake_quant") and hasattr(mod, "to_float"):
            with torch.no_grad():
                snapped = mod.weight_fake_quant(mod.weight)
            flt = mod.to_float()
            first = flt[0] if isinstance(flt, nn.Sequential) else flt
            first.weight = nn.Parameter(snapped.detach().clone())
            parent, _, child = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, child, flt)
    for mod in m.modules():
        _strip_observers(mod)
    return m.model


def _strip_observers(mod: nn.Module) -> None:
    """Remove what prepare_qat attached: observer attributes, hooks and the qconfig."""
    for attr in ("activation_post_process", "qconfig"):
        if hasattr(mod, attr):
            delattr(mod, attr)
    for hooks in (mod._forward_hooks, mod._forward_pre_hooks):
        for key in [k for k, fn in hooks.items() if "observer" in getattr(fn, "__name__", "")]:
            hooks.pop(key)
