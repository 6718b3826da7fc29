"""ONNX Runtime dynamic int8: int8 weights, activations quantized per inference (MatMulInteger).

Why dynamic for transformers: activation ranges vary a lot between sentences (and LayerNorm
outputs have outlier channels), so run-time ranges beat a fixed calibrated range, and no
calibration data is needed. Measured on all-MiniLM-L6-v2 (GUIDE section 2): the default
per-tensor weights give cosine 0.968 to fp32, per-channel 0.994, so per-channel is the default.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from edgekit.quantize._io import load, prepare_output, quant_type

__all__ = ["DynamicInt8Options", "quantize_dynamic_int8"]


@dataclass(frozen=True)
class DynamicInt8Options:
    """Options for :func:`quantize_dynamic_int8`.

    Attributes:
        per_channel: one scale per output column of each weight (per-tensor loses ~3 % cosine).
        weight_type: ``"int8"`` (S8 weights; ORT pairs them with U8 activations: MatMulInteger).
        reduce_range: 7-bit weights, only for old x86 CPUs without VNNI where U8S8 can saturate.
        op_types: ops to quantize. MatMul carries the layers' weights (``quantize_dynamic``
            itself rewrites Gemm into MatMul + Add first, so ``"Gemm"`` would match nothing),
            Gather the embedding tables (all-MiniLM-L6-v2: 47 of its 90 MB); attention's
            activation x activation MatMuls are skipped by ORT (``MatMulConstBOnly``).
        nodes_to_exclude: node names to keep float (e.g. a sensitive output projection).
    """

    per_channel: bool = True
    weight_type: str = "int8"
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    nodes_to_exclude: tuple[str, ...] = ()


def quantize_dynamic_int8(model: str | Path | onnx.ModelProto, output: str | Path, *,
                          options: DynamicInt8Options = DynamicInt8Options()) -> Path:
    """Write the dynamic-int8 version of ``model`` to ``output`` and return its path."""
    from onnxruntime.quantization import quantize_dynamic

    target = prepare_output(output)
    quantize_dynamic(load(model), str(target), op_types_to_quantize=list(options.op_types),
                     per_channel=options.per_channel, reduce_range=options.reduce_range,
                     weight_type=quant_type(options.weight_type),
                     nodes_to_exclude=list(options.nodes_to_exclude) or None)
    return target
