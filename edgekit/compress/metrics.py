"""Size and quality measures shared by every compression method and the stage reports.

:func:`measure_step` adds a build's per-step figures (fp32 ONNX bytes and host latency of the
graph the build would ship, perplexity, the model file's own ``evaluate`` metrics).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgekit.compress.data import Inputs, TrainData, as_tuple, call, num_samples, take

if TYPE_CHECKING:
    from edgekit.context import BuildContext

_EVAL_BATCH = 256


def model_output(model: nn.Module, x: Inputs) -> torch.Tensor:
    """Run ``model`` in eval mode without grad, in batches; the first tensor output.

    ``x`` is one input tensor or a tuple of them (``model(*xs)``).

    Models that return tuples or dicts (Hugging Face style) are reduced to their first
    tensor, which is what the exported graph's first output is too.
    """
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, num_samples(x), _EVAL_BATCH):
            outs.append(first_tensor(call(model, take(x, slice(start, start + _EVAL_BATCH)))))
    model.train(was_training)
    return torch.cat(outs)


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model output (tensor, tuple/list, or dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    raise TypeError(f"model output of type {type(out).__name__} holds no tensor")


def evaluate_top1(model: nn.Module, x: Inputs, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``."""
    pred = model_output(model, x).argmax(dim=1)
    return float((pred == y).float().mean())


def output_cosine(model_a: nn.Module, model_b: nn.Module, x: Inputs) -> float:
    """Mean over samples of the cosine similarity between the two models' flat outputs."""
    a = model_output(model_a, x).flatten(1).double()
    b = model_output(model_b, x).flatten(1).double()
    return float(nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).mean())


def count_params(model: nn.Module) -> int:
    """Number of parameters; shared (tied) parameters count once, as they are stored once."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (batch of 1).

    Uses Torch-Pruning's counter when installed (it also knows attention, norms, pooling, and
    counts bias adds and activations, so it reads a few percent higher); falls back to
    forward hooks on Conv/Linear, which dominate the cost of edge models. Compare figures
    from the same counter only.
    """
    try:
        import torch_pruning as tp  # optional; same counter Torch-Pruning's papers report
    except ImportError:
        return _count_macs_hooks(model, example_inputs)
    try:
        macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
        return int(macs)
    except Exception:  # noqa: BLE001 - exotic modules (fake-quant wrappers): use hooks
        return _count_macs_hooks(model, example_inputs)


def _count_macs_hooks(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    total = 0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        per_out = (module.in_channels // module.groups) * _prod(module.kernel_size) \
            if isinstance(module, nn.modules.conv._ConvNd) else module.in_features
        total += out.numel() // out.shape[0] * per_out

    run_with_hooks(model, [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))],
                   hook, example_inputs)
    return int(total)


def run_with_hooks(model: nn.Module, modules: Iterable[nn.Module], hook: Callable[..., None],
                   example_inputs: tuple[torch.Tensor, ...], *, with_kwargs: bool = False) -> None:
    """Run ``model`` once (eval mode, no grad) with ``hook`` as a forward hook on each of
    ``modules``: how the compression methods probe a graph (MACs, layer order, block shapes).
    The hooks are removed and the train/eval mode restored even when the model raises."""
    was_training = model.training
    handles = [m.register_forward_hook(hook, with_kwargs=with_kwargs) for m in modules]
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _prod(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Zero fraction of each Conv/Linear weight and over all of them (``global``)."""
    layers: dict[str, float] = {}
    zeros = total = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            w = module.weight.detach()
            nz = int((w == 0).sum())
            layers[name] = nz / w.numel()
            zeros += nz
            total += w.numel()
    return {"global": zeros / total if total else 0.0, "layers": layers}


def measure_step(model: nn.Module, ctx: BuildContext, data: TrainData) -> dict[str, Any]:
    """Bytes and latency of one step's model, its perplexity for a language model, plus the
    user's ``evaluate`` metrics if defined. QAT models are measured as their float equivalent
    (fake-quant ops are not deployable)."""
    from edgekit.compress.qat import QuantWrapped, to_float

    if isinstance(model, QuantWrapped):
        model = to_float(model)
    out = onnx_size_and_latency(model.eval(), ctx)
    if ctx.task == "lm":
        out["perplexity"] = perplexity(model, data)
    if "evaluate" in ctx.hooks:
        x, y = data.eval_split()
        out["user_metrics"] = {k: float(v) for k, v in ctx.hooks["evaluate"](model.eval(), x, y).items()}
    return out


def perplexity(model: nn.Module, data: TrainData) -> float:
    """Perplexity on the eval windows (the first input holds the token ids)."""
    from edgekit.verify.metrics import causal_lm_perplexity

    x, _ = data.eval_split()
    return causal_lm_perplexity(model_output(model, x).numpy(), as_tuple(x)[0].numpy())


def onnx_size_and_latency(model: nn.Module, ctx: BuildContext, runs: int = 30) -> dict[str, float]:
    """fp32 ONNX bytes and onnxruntime p50 of ``model``, exported exactly as the build's ONNX
    export stage exports the model it ships."""
    from edgekit.verify.hostrun import ORTSession

    with tempfile.TemporaryDirectory() as tmp:
        path = step_onnx(model, ctx, Path(tmp))
        session = ORTSession(path, ctx.inputs, ctx.outputs, threads=1)
        sample = {k: v[0] for k, v in ctx.calibration.verification.items()}
        return {"onnx_fp32_bytes": path.stat().st_size, "ort_fp32_p50_ms": float(np.median(session.latency_ms(sample, runs)))}


def step_onnx(model: nn.Module, ctx: BuildContext, folder: Path) -> Path:
    """``folder/step.onnx``: ``model`` exported by the ONNX export stage's own exporter."""
    import onnx

    from edgekit.quantize.onnx_rewrites import dedupe_value_names
    from edgekit.stages.export_onnx import export_model

    path = folder / "step.onnx"
    export_model(model, ctx, path)
    # the clean-up stage's first repair, for the same reason: the dynamo exporter can define a
    # value twice (aten.embedding's output "embedding" beside a user output of that name), which
    # onnxruntime refuses to load (measured on the MiniLM depth student)
    onnx.save(dedupe_value_names(onnx.load(str(path))), str(path))
    return path
