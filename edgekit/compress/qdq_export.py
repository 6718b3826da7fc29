"""Export a QAT model to ONNX with QuantizeLinear/DequantizeLinear (QDQ) pairs.

The TorchScript exporter (``dynamo=False``) writes each FakeQuantize as a Q/DQ pair; ORT's
graph optimizer then fuses "DQ -> Conv/Gemm -> Q" into its int8 kernels (QLinearConv,
QGemm). The weights come out as float initializers behind a QuantizeLinear; we fold those
into int8 initializers so the file holds 1 byte per weight, as a PTQ QDQ model does.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.compress.errors import require

OPSET = 17  # QDQ per-axis needs >= 13; 17 is what the rest of edgekit exports


def export_qdq_onnx(qat_model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                    path: str | Path, *, input_names: list[str] | None = None,
                    output_names: list[str] | None = None, dynamic_batch: bool = True,
                    fold_weights: bool = True) -> Path:
    """Write ``qat_model`` (from :func:`edgekit.compress.qat.apply`) as a QDQ ONNX file."""
    onnx = require("onnx", "onnx", "QDQ ONNX export")
    path = Path(path)
    input_names = input_names or [f"input{i}" if i else "input" for i in range(len(example_inputs))]
    output_names = output_names or ["output"]
    axes = {n: {0: "batch"} for n in input_names + output_names} if dynamic_batch else None
    qat_model.eval()
    with warnings.catch_warnings():
        # FakeQuantize branches on its enable flags; tracing freezes them, which is intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(qat_model, example_inputs, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=axes)
    model = onnx.load(str(path))
    requantize_after_reshapes(model)
    if fold_weights:
        fold_weight_quantize(model)
    onnx.save(model, str(path))
    return path


_RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose")


def requantize_after_reshapes(model: Any) -> int:
    """Repeat a DequantizeLinear's Q/DQ pair after a Flatten/Reshape/... it feeds; returns
    the count. Eager QAT cannot observe functional reshapes such as ``torch.flatten``, and
    ORT only fuses a Gemm/MatMul into its int8 kernel when its input comes straight from a
    DQ. Reshapes do not change values, so the same scale and zero point stay exact."""
    from onnx import helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    nodes, added = [], 0
    for node in graph.node:
        nodes.append(node)
        src = producer.get(node.input[0]) if node.input else None
        if node.op_type not in _RESHAPES or src is None or src.op_type != "DequantizeLinear":
            continue
        out, scale, zp = node.output[0], src.input[1], src.input[2]
        if any(o.name == out for o in graph.output):
            continue  # keep graph outputs float, as the model returned them
        q_out, dq_out = f"{out}_requant_q", f"{out}_requant"
        for consumer in graph.node:
            consumer.input[:] = [dq_out if i == out else i for i in consumer.input]
        nodes += [helper.make_node("QuantizeLinear", [out, scale, zp], [q_out]),
                  helper.make_node("DequantizeLinear", [q_out, scale, zp], [dq_out])]
        added += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return added


def fold_weight_quantize(model: Any) -> int:
    """Replace ``QuantizeLinear(constant)`` by its int8/uint8 result, in place; returns the
    number folded. What ORT would do at load time, done once so the file is smaller."""
    from onnx import numpy_helper

    graph = model.graph
    _inline_identity_constants(graph)
    inits = {i.name: i for i in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(n in inits for n in node.input):
            keep.append(node)
            continue
        x, scale, zp = (numpy_helper.to_array(inits[n]) for n in node.input)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        q = _quantize(x, scale, zp, axis)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded += 1
    del graph.node[:]
    graph.node.extend(keep)
    _drop_unused_initializers(graph)
    return folded


def _inline_identity_constants(graph: Any) -> None:
    """Drop ``Identity(initializer)`` nodes (the exporter shares equal zero points that
    way) and point their consumers at the initializer, so folding sees constants."""
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)


def _quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    if scale.ndim == 1 and scale.size > 1:  # per-axis: broadcast along ``axis``
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    info = np.iinfo(zp.dtype)
    q = np.rint(x / scale) + zp.astype(np.int32)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def ort_kernel_counts(path: str | Path) -> dict[str, int]:
    """Op types of the graph ORT actually runs (after its QDQ fusions), e.g.
    ``{'QLinearConv': 3, ...}``: the proof that int8 kernels are used."""
    ort = require("onnxruntime", "onnxruntime", "checking ORT kernels")
    onnx = require("onnx", "onnx", "checking ORT kernels")
    path = Path(path)
    optimized = path.with_suffix(".ort-optimized.onnx")
    so = ort.SessionOptions()
    # Extended (not all) optimizations: the QDQ fusions, without x86-only layout rewrites.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(optimized)
    so.intra_op_num_threads = 1
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    optimized.unlink(missing_ok=True)
    return dict(counts)


def run_onnx(path: str | Path, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """First output of the ONNX model at ``path`` on one float input ``x``."""
    ort = require("onnxruntime", "onnxruntime", "running ONNX models")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
