"""ONNX Runtime static QDQ int8 for image/float models, with the target profile's scheme.

onnxruntime.quantization is ORT's own quantizer: its QDQ output is exactly what ORT's int8
kernels (and the NNAPI EP) fuse, which no third-party quantizer guarantees. The scheme
(signedness, per-channel, reduce_range) comes from the profile because the fast choice differs
per target. Token-input models go through ``ort_static_transformer`` instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.quantize._io import CalibrationReader, quant_type
from edgekit.targets import ORTInt8, Precision
from edgekit.verify import hostinfo

__all__ = ["WEIGHT_OPS", "prepare", "quantize_qdq", "reduce_range_for", "scheme_record", "weight_nodes"]


def reduce_range_for(scheme: ORTInt8) -> bool:
    """7-bit weights when the profile asks, or when it names the CPU features full-range int8
    needs and this build host (which is then the target) has none of them."""
    return scheme.reduce_range or bool(scheme.full_range_features and not hostinfo.has_any(scheme.full_range_features))


def scheme_record(scheme: ORTInt8, precision: Precision) -> dict:
    """The int8 scheme an artifact of ``precision`` was made with, as the manifest records it
    (dynamic int8 is always uint8 activations, per channel)."""
    if precision not in (Precision.INT8, Precision.INT8_DYNAMIC):
        return {}
    dynamic = precision == Precision.INT8_DYNAMIC
    # recorded only when not the default, so default builds keep their manifests as they were
    calibration = {} if dynamic or scheme.calibrate_method == "MinMax" else {"calibrate_method": scheme.calibrate_method}
    if not dynamic and scheme.calibration_samples is not None:
        calibration["calibration_samples"] = scheme.calibration_samples
    if not dynamic and scheme.float_nodes:
        calibration["float_nodes"] = list(scheme.float_nodes)
    return {**calibration, "activation_type": "uint8" if dynamic else scheme.activation_type.value, "weight_type": scheme.weight_type.value,
            "per_channel": True if dynamic else scheme.per_channel, "reduce_range": reduce_range_for(scheme),
            "host_int8_isa": hostinfo.int8_isa()}


#: the ops onnxruntime's static quantizer gives int8 weights (the layers a sensitivity run ranks)
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def prepare(source: Path, scratch: Path) -> Path:
    """The graph the quantizer sees: quant_pre_process runs symbolic shape inference and ORT's
    graph optimizations, so Conv+Relu etc. are fused and fewer QDQ pairs are placed. Its node
    names are the ones ``float_nodes`` and a sensitivity run use."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekit.runner.edgekit_runner import sha256_file

    prepared = scratch / f"ort_preprocessed_{sha256_file(source)[:12]}.onnx"  # one per source graph
    if not prepared.is_file():
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
    return prepared


def weight_nodes(prepared: Path) -> list[tuple[str, str]]:
    """``(name, op)`` of every node of ``prepared`` with int8 weights, in graph order."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in WEIGHT_OPS]


def quantize_qdq(source: Path, target: Path, samples: dict[str, np.ndarray], scheme: ORTInt8, scratch: Path,
                 only: list[str] | None = None) -> None:
    """Static QDQ int8 of an image/float model with the profile's scheme, calibrated on ``samples``
    (``{input_name: [N, 1, ...]}``; the scheme's method and sample count), its ``float_nodes``
    left in float; ``only``: quantize just these nodes (a sensitivity run); ``scratch`` holds
    the preprocessed graph."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    prepared = prepare(source, scratch)
    if scheme.calibration_samples is not None:
        samples = {name: array[:scheme.calibration_samples] for name, array in samples.items()}
    quantize_static(str(prepared), str(target), CalibrationReader(samples),
                    quant_format=QuantFormat.QDQ, per_channel=scheme.per_channel,
                    activation_type=quant_type(scheme.activation_type.value), weight_type=quant_type(scheme.weight_type.value),
                    calibrate_method=CalibrationMethod[scheme.calibrate_method], reduce_range=reduce_range_for(scheme),
                    nodes_to_quantize=only, nodes_to_exclude=list(scheme.float_nodes) or None)
