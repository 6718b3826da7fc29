"""ONNX Runtime static QDQ int8 for transformers, with the sensitive ops left in float.

Why not quantize everything: in a transformer the weights live in the MatMul/Gemm projections,
while LayerNormalization, Softmax, GELU (Erf) and the mean-pooling ReduceSum/Div have wide or
outlier-heavy activations where an 8-bit grid costs accuracy and buys little speed. So only
MatMul/Gemm/Conv get Q/DQ pairs (their float inputs are quantized with calibrated ranges); the
rest of the graph runs in float between them. Attention's activation x activation MatMuls
(Q.K^T, P.V) are excluded by name: ORT's ``MatMulConstBOnly`` option only acts in dynamic /
QOperator mode, and their ranges change per sentence while the scores feed Softmax.

ORT also puts a Q/DQ pair on each quantized MatMul's *output* (into the residual stream and
the LayerNorm/GELU inputs). That costs accuracy but is what lets ORT fuse the node into
QLinearMatMul; without it ORT dequantizes every weight on every run. Measured on MiniLM (one
thread, kernel time): outputs quantized 10.5 ms (fp32 17.8 ms), outputs float 36.7 ms, so
``quantize_outputs=True`` is the default (cosine 0.990 vs 0.992 on 16 held-out sentences).

One projection needs more care: the FFN down-projection, whose input is the GELU output (long
positive tail, most values near zero). Measured on all-MiniLM-L6-v2 (16 held-out sentences,
quantizing one group at a time): FFN down 0.945 cosine, FFN up 0.994, Q/K/V 0.997, attention
output 0.9994, embeddings 0.999. So MatMuls fed by GELU are handled apart (``gelu_fed``):
``"weight_only"`` (default) gives them int8 weights behind a per-channel DequantizeLinear and a
float activation (ORT runs it as 8-bit MatMulNBits); ``"dynamic"`` quantizes them with ORT's
dynamic int8 (activation range per inference). MiniLM, 16 held-out sentences, percentile
calibration: weight-only 0.9912 / 0.9893 at 12.9 ms, dynamic 0.9888 / 0.9825 at 9.2 ms,
fully static 0.94 (one thread, kernel time; fp32 17.8 ms).

Calibration data are token inputs: ``{input_name: int64 array [N, 1, seq_len]}`` (edgekit's
convention: sample ``i`` is one static batch-1 tensor), e.g. from ``edgekit.text.tokenize``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgekit.quantize._io import CalibrationReader, load, prepare_output, quant_type

__all__ = ["SENSITIVE_OP_TYPES", "StaticTransformerOptions", "quantize_static_transformer"]

# Kept float even if ``op_types`` is widened: normalisation, attention probabilities, GELU and
# the pooling divide are where int8 activations hurt transformers most.
SENSITIVE_OP_TYPES = ("LayerNormalization", "Softmax", "Gelu", "Erf", "ReduceMean", "ReduceSum", "Div", "Sqrt", "Pow")


@dataclass(frozen=True)
class StaticTransformerOptions:
    """Options for :func:`quantize_static_transformer`.

    Attributes:
        op_types: ops that get Q/DQ: the weight-carrying ones (Gather: the embedding tables,
            stored int8 behind a DequantizeLinear).
        exclude_op_types: ops whose nodes are always excluded (``SENSITIVE_OP_TYPES``).
        activation_type: ``"uint8"`` (U8S8: the fast int8 path on x86 without VNNI) or ``"int8"``
            (S8S8: the fast path on ARM); pick per target.
        weight_type: ``"int8"``.
        per_channel: one weight scale per output channel (keeps small-norm columns precise).
        calibrate_method: ``"percentile"`` (clips activation outliers; MiniLM 0.9912 vs 0.9908 for
            ``"minmax"``, min 0.989 vs 0.985), ``"minmax"`` or ``"entropy"``.
        percentile: the percentile for ``calibrate_method="percentile"``.
        const_b_only: only quantize MatMuls whose B is a weight (skips attention's Q.K^T and P.V).
        quantize_outputs: also put Q/DQ on the outputs of the quantized MatMul/Gemm (ORT's default;
            needed for its fused int8 kernels; ``False`` is more accurate and much slower).
        preprocess: run ``quant_pre_process``'s symbolic shape inference first. Its graph
            optimization step is skipped on purpose: it fuses some MatMul+Add pairs into Gemm and
            names the new reshape values ``gemm_input_reshape_arg*``; when some MatMuls then stay
            float, ORT 1.32's own MatMulAddFusion at session start picks the same names and the
            session fails ("AddInitializedOrtValue Attempt to replace the existing tensor").
        nodes_to_exclude: further node names to keep float (names after preprocessing).
        gelu_producers: MatMul/Gemm nodes whose activation input comes from one of these op
            types (directly, or as the last Mul of a decomposed erf-GELU) are "GELU-fed".
        gelu_fed: ``"weight_only"``, ``"dynamic"`` or ``"static"`` (quantize like the rest).
        reduce_range: 7-bit weights, for x86 targets without VNNI (their u8s8 kernels saturate).
    """

    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv", "Gather")
    exclude_op_types: tuple[str, ...] = SENSITIVE_OP_TYPES
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibrate_method: str = "percentile"
    percentile: float = 99.999
    const_b_only: bool = True
    quantize_outputs: bool = True
    preprocess: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    gelu_producers: tuple[str, ...] = ("Gelu", "Erf")
    gelu_fed: str = "weight_only"
    reduce_range: bool = False


def _calibration_method(options: StaticTransformerOptions):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if options.calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {sorted(methods)}, not {options.calibrate_method!r}")
    return methods[options.calibrate_method]


def _excluded(graph: onnx.GraphProto, options: StaticTransformerOptions, gelu_fed: list[str]) -> list[str]:
    """Nodes kept out of static quantization: the sensitive op types, the caller's names, the
    GELU-fed projections (handled apart) and, with ``const_b_only``, activation x activation MatMuls."""
    excluded = [n.name for n in graph.node if n.op_type in options.exclude_op_types]
    excluded += list(options.nodes_to_exclude) + gelu_fed
    if options.const_b_only:
        weights = {t.name for t in graph.initializer}
        excluded += [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in weights]
    return excluded


def _extra_options(options: StaticTransformerOptions) -> dict:
    """``quantize_static``'s ``extra_options`` for ``options``."""
    extra: dict = {"MatMulConstBOnly": options.const_b_only}
    if not options.quantize_outputs:
        # Gather keeps its output Q: ORT then runs DQ -> Gather -> Q as an int8 Gather instead
        # of dequantizing the whole embedding table on every inference.
        extra["OpTypesToExcludeOutputQuantization"] = [t for t in options.op_types if t != "Gather"]
    if options.calibrate_method == "percentile":
        extra["CalibPercentile"] = options.percentile
    return extra


def quantize_static_transformer(model: str | Path | onnx.ModelProto, output: str | Path,
                                calibration: dict[str, np.ndarray], *,
                                options: StaticTransformerOptions = StaticTransformerOptions()) -> Path:
    """Write a static QDQ int8 version of ``model`` calibrated on ``calibration`` token inputs."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if options.gelu_fed not in ("weight_only", "dynamic", "static"):
        raise ValueError(f"gelu_fed must be 'weight_only', 'dynamic' or 'static', not {options.gelu_fed!r}")
    target = prepare_output(output)
    method = _calibration_method(options)
    with tempfile.TemporaryDirectory(prefix="edgekit_qdq_") as tmp:
        source = Path(tmp) / "source.onnx"
        onnx.save(load(model), str(source))
        if options.preprocess:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=False)
            source = prepared
        graph = onnx.load(str(source)).graph
        gelu_fed = [] if options.gelu_fed == "static" else _fed_by(graph, options.op_types, options.gelu_producers)
        quantize_static(str(source), str(target), CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(options.op_types), nodes_to_exclude=_excluded(graph, options, gelu_fed),
                        per_channel=options.per_channel, activation_type=quant_type(options.activation_type),
                        weight_type=quant_type(options.weight_type), calibrate_method=method,
                        extra_options=_extra_options(options), reduce_range=options.reduce_range)
        if gelu_fed and options.gelu_fed == "dynamic":
            from onnxruntime.quantization import quantize_dynamic

            static = Path(tmp) / "static.onnx"
            target.replace(static)
            quantize_dynamic(str(static), str(target), op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=gelu_fed,
                             per_channel=options.per_channel, weight_type=quant_type(options.weight_type),
                             reduce_range=options.reduce_range)
    if gelu_fed and options.gelu_fed == "weight_only":
        onnx.save(weight_only_int8(onnx.load(str(target)), gelu_fed), str(target))
    return target


def _fed_by(graph: onnx.GraphProto, op_types: tuple[str, ...], producers: tuple[str, ...]) -> list[str]:
    """Names of ``op_types`` nodes whose first input is produced by one of ``producers``, or by a
    Mul within two Mul/Add hops of one (erf-GELU exports as ``x * 0.5 * (1 + erf(x / sqrt2))``)."""
    if not producers:
        return []
    made_by = {out: node for node in graph.node for out in node.output}

    def from_producer(name: str, hops: int) -> bool:
        node = made_by.get(name)
        if node is None:
            return False
        if node.op_type in producers:
            return True
        return hops > 0 and node.op_type in ("Mul", "Add") and any(from_producer(i, hops - 1) for i in node.input)

    return [n.name for n in graph.node if n.op_type in op_types and n.input and from_producer(n.input[0], 3)]


def weight_only_int8(model: onnx.ModelProto, node_names: list[str]) -> onnx.ModelProto:
    """Give the named MatMul/Gemm nodes int8 per-channel symmetric weights behind a
    DequantizeLinear (activations stay float). Gemm is handled when ``transB=0``; other nodes
    or non-constant weights are left as they are."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    wanted = set(node_names)
    for node in graph.node:
        if node.name not in wanted or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if weight.ndim != 2:
            continue
        # symmetric per output column: scale = max|w| / 127, zero point 0 (ORT's weight default)
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
        q = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        base = f"{node.input[1]}_{node.name}_wo"
        graph.initializer.extend([numpy_helper.from_array(q, base + "_q"),
                                  numpy_helper.from_array(scale.astype(np.float32), base + "_scale"),
                                  numpy_helper.from_array(np.zeros_like(q[0]), base + "_zero")])
        graph.node.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zero"],
                                           [base + "_dq"], name=base + "_DequantizeLinear", axis=1))
        node.input[1] = base + "_dq"
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    _topological_sort(graph)
    return model


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every input is defined before use (appended DQ nodes move up)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an undefined input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
