"""ONNX Runtime weight-only int4: MatMul -> MatMulNBits, embedding Gather -> GatherBlockQuantized.

Why weight-only: at batch 1 a transformer is bound by reading its weights, so 4-bit weights
(blockwise scales, dequantized inside the kernel) cut size ~7x with activations left float.
Two things the quantizer does not do on its own:

- it only rewrites ``MatMul``; torch's dynamo exporter writes a 2-D ``nn.Linear`` as ``Gemm``,
  on which it quantizes nothing (GUIDE section 2), so Gemms are rewritten first (exact);
- the word-embedding table is often the largest weight (all-MiniLM-L6-v2: 47 of 90 MB), so
  ``Gather`` on a constant table is quantized too (needs opset 21 int4 types; the quantizer
  raises the model's opset, which ORT runs).

Measured on all-MiniLM-L6-v2 (16 held-out sentences, cosine mean / min, bytes vs fp32):
symmetric RTN block 32 0.965 / 0.948 (0.161x); asymmetric RTN block 32 0.973 / 0.961 (0.165x);
asymmetric block 16 0.980 / 0.964 (0.200x); HQQ block 32 0.977 / 0.971 (0.178x, but its float
zero points make MatMulNBits ~2x slower on x86). Default: asymmetric RTN, block 32, int8 compute.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgekit.quantize._io import load, prepare_output
from edgekit.quantize.onnx_rewrites import gemm_to_matmul

__all__ = ["Int4Options", "quantize_int4_weights"]


@dataclass(frozen=True)
class Int4Options:
    """Options for :func:`quantize_int4_weights`.

    Attributes:
        block_size: weights per scale along the reduction axis (power of two >= 16). Smaller
            blocks are more accurate and slightly larger (one fp32 scale per block).
        symmetric: signed int4 without zero points (smaller, but less accurate than a zero
            point per block on transformer weights).
        accuracy_level: MatMulNBits compute type: None/0 = as the input (fp32), 4 = int8
            activations inside the kernel (faster on x86/ARM; no measurable loss on MiniLM).
        algorithm: ``"rtn"`` (round to nearest) or ``"hqq"`` (half-quadratic: better MatMul
            weights, float zero points, slower kernel; embeddings still use RTN).
        quantize_embeddings: also quantize ``Gather`` on constant tables (embeddings).
        nodes_to_exclude: node names to keep float (e.g. a tied LM head that is too sensitive).
    """

    block_size: int = 32
    symmetric: bool = False
    accuracy_level: int | None = 4
    algorithm: str = "rtn"
    quantize_embeddings: bool = True
    nodes_to_exclude: tuple[str, ...] = ()


def quantize_int4_weights(model: str | Path | onnx.ModelProto, output: str | Path, *,
                          options: Int4Options = Int4Options()) -> Path:
    """Write the int4 weight-only version of ``model`` to ``output`` and return its path."""
    if options.block_size < 16 or options.block_size & (options.block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, not {options.block_size}")
    if options.algorithm not in ("rtn", "hqq"):
        raise ValueError(f"algorithm must be 'rtn' or 'hqq', not {options.algorithm!r}")
    target = prepare_output(output)
    proto = gemm_to_matmul(load(model))
    # The quantizer logs a warning per raised opset/IR version and an INFO line per node.
    log = logging.getLogger("onnxruntime.quantization")
    previous = log.level
    log.setLevel(logging.ERROR)
    try:
        if options.algorithm == "hqq":  # HQQ cannot do Gather: MatMuls first, embeddings by RTN below
            proto = _run(proto, _config(options, ("MatMul",), hqq=True), options)
            op_types = ("Gather",) if options.quantize_embeddings else ()
        else:
            op_types = ("MatMul", "Gather") if options.quantize_embeddings else ("MatMul",)
        if op_types:
            proto = _run(proto, _config(options, op_types, hqq=False), options)
    finally:
        log.setLevel(previous)
    onnx.save(proto, str(target))
    return target


def _config(options: Int4Options, op_types: tuple[str, ...], *, hqq: bool):
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, HQQWeightOnlyQuantConfig

    if hqq:
        return HQQWeightOnlyQuantConfig(block_size=options.block_size, bits=4, op_types_to_quantize=op_types)
    return DefaultWeightOnlyQuantConfig(block_size=options.block_size, is_symmetric=options.symmetric,
                                        accuracy_level=options.accuracy_level, quant_format=QuantFormat.QOperator,
                                        op_types_to_quantize=op_types, bits=4)


def _run(proto: onnx.ModelProto, config, options: Int4Options) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(proto, nodes_to_exclude=list(options.nodes_to_exclude), algo_config=config)
    quantizer.process()
    return quantizer.model.model
