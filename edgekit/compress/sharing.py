"""Weight sharing (tying): parameters meant to be one tensor become one tensor.

Typical case: a language model's input embedding and output projection
(``tie(model, [("embed.weight", "lm_head.weight")])``). Tied parameters are stored once by
``model.parameters()``, ``torch.save`` (one storage) and the ONNX exporter (one initializer),
so the saving is real in the artifacts; :func:`onnx_initializer_stats` measures it.

Measured caveat (torch 2.13): the exporters' constant folding pre-transposes a weight that a
``MatMul`` consumes (an ``nn.Linear`` on 3-D input, as in a language model head) into a new
initializer, which duplicates a tied weight again. Export tied models with
``do_constant_folding=False`` (TorchScript exporter): the ONNX file then stores the tied
weight once and transposes it at run time.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.compress.data import TrainData
from edgekit.compress.errors import RecipeError, require


@dataclass(frozen=True)
class ShareOptions:
    """Options of :func:`apply`.

    Attributes:
        pairs: ``(kept, replaced)`` parameter names: ``replaced`` becomes the very same
            Parameter as ``kept`` (its own values are dropped). Shapes must match.
        auto: also tie every parameter whose shape and values equal an earlier one's
            (within ``atol``): copies that training left identical.
        atol: absolute tolerance of the auto-detection (0 = bit-identical).
        min_numel: auto-detection ignores smaller tensors (scalars and biases that are equal
            by chance, e.g. all-zero, would otherwise tie and then train together).
    """

    pairs: tuple[tuple[str, str], ...] = ()
    auto: bool = True
    atol: float = 0.0
    min_numel: int = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        if any(len(p) != 2 for p in self.pairs):
            raise RecipeError("share: pairs must be (kept_parameter, replaced_parameter) names")
        if not self.pairs and not self.auto:
            raise RecipeError("share: nothing to do; give pairs or set auto=true")
        if self.atol < 0 or self.min_numel < 1:
            raise RecipeError("share: atol must be >= 0 and min_numel >= 1")


def validate(options: ShareOptions, model: nn.Module, data: TrainData | None = None) -> None:
    """Every named parameter exists and each pair has matching shapes."""
    params = dict(model.named_parameters(remove_duplicate=False))
    for kept, replaced in options.pairs:
        for name in (kept, replaced):
            if name not in params:
                raise RecipeError(f"share: {name!r} is not a parameter of the model; "
                                  f"e.g. {', '.join(list(params)[:6])}")
        if params[kept].shape != params[replaced].shape:
            raise RecipeError(f"share: cannot tie {kept!r} {tuple(params[kept].shape)} and "
                              f"{replaced!r} {tuple(params[replaced].shape)}: shapes differ")


def find_identical(model: nn.Module, atol: float = 0.0, min_numel: int = 1024,
                   ) -> list[tuple[str, str]]:
    """``(kept, replaced)`` pairs of distinct parameters with equal shape and values."""
    seen: list[tuple[str, torch.Tensor]] = []
    pairs = []
    for name, p in model.named_parameters():  # already-tied parameters are listed once
        if p.numel() < min_numel:
            continue
        match = next((k for k, q in seen if q.shape == p.shape and torch.allclose(
            q, p.detach(), rtol=0.0, atol=atol)), None)
        if match is None:
            seen.append((name, p.detach()))
        else:
            pairs.append((match, name))
    return pairs


def tie(model: nn.Module, pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...],
        ) -> nn.Module:
    """Make each ``replaced`` parameter the ``kept`` Parameter object, in place."""
    params = dict(model.named_parameters(remove_duplicate=False))
    for kept, replaced in pairs:
        owner, _, attr = replaced.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, params[kept])
    return model


def apply(model: nn.Module, options: ShareOptions, data: TrainData | None = None,
          ) -> tuple[nn.Module, dict[str, Any]]:
    """Tie the given and the auto-detected pairs in a copy of ``model``; ``(model, report)``."""
    import copy

    validate(options, model, data)
    out = copy.deepcopy(model)
    params = dict(out.named_parameters(remove_duplicate=False))
    pairs = list(options.pairs)
    max_diff = {f"{k}<-{r}": float((params[k] - params[r]).detach().abs().max())
                for k, r in pairs}
    tie(out, pairs)
    if options.auto:
        auto = find_identical(out, options.atol, options.min_numel)
        tie(out, auto)
        pairs += auto
    saved = sum(params[r].numel() * params[r].element_size() for _, r in pairs)
    report = {"tied": [list(p) for p in pairs], "bytes_saved": saved,
              "max_abs_diff_explicit": max_diff,
              "state_dict_bytes_before": saved_bytes(model), "state_dict_bytes_after": saved_bytes(out)}
    return out, report


def saved_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: shared storages are written once."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def onnx_initializer_stats(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], *,
                           constant_folding: bool = False) -> dict[str, int]:
    """``{'count', 'bytes'}`` of the initializers in the model's ONNX export (TorchScript
    exporter, opset 17); see the module doc for why folding is off by default."""
    onnx = require("onnx", "onnx", "measuring ONNX initializers")
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(model.eval(), example_inputs, str(path), dynamo=False, opset_version=17,
                          do_constant_folding=constant_folding)
        inits = onnx.load(str(path)).graph.initializer
        return {"count": len(inits), "bytes": sum(numpy_helper.to_array(i).nbytes for i in inits)}
