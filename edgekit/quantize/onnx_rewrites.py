"""ONNX graph rewrites that make exported transformers digestible by converters and quantizers.

Each function takes a ``ModelProto`` and returns a rewritten copy (the input is not modified),
checked with ``onnx.checker``. They are exact: outputs do not change beyond float rounding.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["INT8_SENSITIVE_ONNX_OPS", "dedupe_value_names", "fuse_erf_gelu", "gemm_to_matmul", "int8_sensitive_ops", "op_counts",
           "rewrite_for_onnx2tf"]


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _unique(stem: str, taken: set[str]) -> str:
    i = 0
    while f"{stem}__{i}" in taken:
        i += 1
    taken.add(f"{stem}__{i}")
    return f"{stem}__{i}"


def _all_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {v.name for v in list(g.input) + list(g.output) + list(g.value_info)} | {t.name for t in g.initializer}
    for node in g.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def dedupe_value_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename values that two nodes define, so the graph is valid SSA again.

    Why: torch's dynamo exporter names the output of ``aten.embedding`` ``embedding``; when the
    user also calls a graph output ``embedding`` (``output_names=["embedding"]``), the file has
    two definitions and onnxruntime refuses to load it ("Duplicate definition of name"). Nodes
    are in topological order, so each earlier definition and the consumers before the next
    definition get a fresh name; the last definition keeps the name (it is the graph output).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = out.graph.node
    taken = _all_names(out)
    defined: dict[str, int] = {}
    for k, node in enumerate(nodes):
        for name in [o for o in node.output if o in defined]:
            fresh = _unique(name, taken)
            first = defined[name]
            nodes[first].output[list(nodes[first].output).index(name)] = fresh
            for consumer in nodes[first + 1:k + 1]:
                for j, inp in enumerate(consumer.input):
                    if inp == name:
                        consumer.input[j] = fresh
            for vi in out.graph.value_info:
                if vi.name == name:
                    vi.name = fresh
        for name in node.output:
            if name:
                defined[name] = k
    onnx.checker.check_model(out)
    return out


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``Gemm(A, B, C)`` nodes with constant ``B`` into ``MatMul(A, B') [+ Add(., C')]``.

    Why: the dynamo exporter writes a 2-D ``nn.Linear`` as ``Gemm`` (``transB=1``), and ORT's
    weight-only int4 quantizer (``MatMulNBitsQuantizer``) only rewrites ``MatMul``: on a Gemm
    graph it quantizes nothing. ``B`` is transposed (and scaled by ``alpha``) as an initializer,
    ``C`` scaled by ``beta``. Gemms with ``transA=1`` or a non-constant ``B`` are left as they are.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    taken = _all_names(out)
    new_nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or attrs.get("transA", 0) or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        new_nodes.extend(_gemm_as_matmul(node, attrs, inits, graph, taken))
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    onnx.checker.check_model(out)
    return out


def _gemm_as_matmul(node: onnx.NodeProto, attrs: dict, inits: dict[str, onnx.TensorProto], graph: onnx.GraphProto,
                    taken: set[str]) -> list[onnx.NodeProto]:
    """One Gemm as ``MatMul(A, alpha * B')`` [``+ Add(., beta * C)``]; new initializers go into ``graph``."""
    weight = numpy_helper.to_array(inits[node.input[1]])
    weight = (weight.T if attrs.get("transB", 0) else weight) * np.asarray(attrs.get("alpha", 1.0), weight.dtype)
    w_name = _unique(node.input[1] + "_matmul", taken)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
    has_bias = len(node.input) > 2 and node.input[2]
    mm_out = _unique(node.output[0] + "_matmul", taken) if has_bias else node.output[0]
    nodes = [helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=(node.name or "gemm") + "_matmul")]
    if has_bias:
        bias_name = _gemm_bias(node, attrs.get("beta", 1.0), inits, graph, taken)
        nodes.append(helper.make_node("Add", [mm_out, bias_name], [node.output[0]], name=(node.name or "gemm") + "_bias"))
    return nodes


def _gemm_bias(node: onnx.NodeProto, beta: float, inits: dict[str, onnx.TensorProto], graph: onnx.GraphProto,
               taken: set[str]) -> str:
    """The name of Gemm's ``C`` scaled by ``beta``: C itself at 1.0, else a new initializer."""
    bias_name = node.input[2]
    if beta == 1.0:
        return bias_name
    if bias_name not in inits:
        raise ValueError(f"Gemm {node.name!r}: beta={beta} with a non-constant C is not supported")
    bias = numpy_helper.to_array(inits[bias_name])
    bias_name = _unique(bias_name + "_scaled", taken)
    graph.initializer.append(numpy_helper.from_array(bias * np.asarray(beta, bias.dtype), bias_name))
    return bias_name


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def rewrite_for_onnx2tf(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``ReduceL2(x)`` with ``Sqrt(ReduceSum(Mul(x, x)))`` (same axes, keepdims).

    Why: ``F.normalize`` exports as ``x / max(ReduceL2(x), eps)`` and onnx2tf 1.28 fails on the
    ReduceL2 ("'axis' must be None, an integer, or a tuple of 2 unique integers"). The
    Mul/ReduceSum/Sqrt form is the definition of the L2 norm and converts; the Div stays.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = _opset(out)
    taken = _all_names(out)
    new_nodes = []
    for node in out.graph.node:
        if node.op_type != "ReduceL2":
            new_nodes.append(node)
            continue
        base = node.name or "reducel2"
        squared = _unique(node.output[0] + "_sq", taken)
        summed = _unique(node.output[0] + "_sumsq", taken)
        new_nodes.append(helper.make_node("Mul", [node.input[0], node.input[0]], [squared], name=base + "_square"))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = [squared] + list(node.input[1:])  # opset >= 18: axes is an input for both ops
        if opset >= 13 and "axes" in attrs:  # opset 13-17: ReduceL2 has an axes attribute, ReduceSum an input
            axes_name = _unique(base + "_axes", taken)
            out.graph.initializer.append(numpy_helper.from_array(np.asarray(attrs.pop("axes"), np.int64), axes_name))
            inputs = [squared, axes_name]
        new_nodes.append(helper.make_node("ReduceSum", inputs, [summed], name=base + "_sum", **attrs))
        new_nodes.append(helper.make_node("Sqrt", [summed], [node.output[0]], name=base + "_sqrt"))
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    onnx.checker.check_model(out)
    return out


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` over the main graph, for reports and tests."""
    return dict(Counter(node.op_type for node in model.graph.node))


# ONNX ops whose full-integer TFLite lowering is unsafe or imprecise: LayerNorm's MEAN /
# SQUARED_DIFFERENCE / RSQRT, Softmax, and GELU (onnx2tf's builtin-only Erf has activation
# DIVs: on a small ViT the int8 DIV kernel aborted with ``div.cc data[i] != zero_point``, its
# divisor's int8 range holding zero). A graph with any of them gets the float-fallback int8.
INT8_SENSITIVE_ONNX_OPS = ("LayerNormalization", "Softmax", "Erf", "Gelu", "Sqrt", "Reciprocal", "Pow")


def int8_sensitive_ops(model: onnx.ModelProto) -> list[str]:
    """The op types in ``model`` that full-integer TFLite must not run as int8 (sorted), plus
    ``Div`` when a divisor is computed (a constant divisor is a multiplication)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    found = {n.op_type for n in model.graph.node if n.op_type in INT8_SENSITIVE_ONNX_OPS}
    if any(n.op_type == "Div" and n.input[1] not in constants for n in model.graph.node):
        found.add("Div")
    return sorted(found)


def _scalar(inits: dict, name: str, value: float) -> bool:
    return name in inits and inits[name].size == 1 and abs(float(inits[name].reshape(())) - value) < 1e-6


def _erf_gelus(graph: onnx.GraphProto) -> list[tuple[list, str, str]]:
    """Each ``x * (0.5 * (1 + Erf(x / sqrt(2))))`` (the exporters' exact GELU, factors in either
    order) as ``(nodes to drop, x, output)``."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}
    users: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only_user(node, op: str):
        found = users.get(node.output[0], [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    def other(node, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    matches = []
    for erf in (n for n in graph.node if n.op_type == "Erf"):
        div = made.get(erf.input[0])
        add = only_user(erf, "Add")
        half = add and only_user(add, "Mul")
        final = half and only_user(half, "Mul")
        if not (div is not None and div.op_type == "Div" and _scalar(inits, div.input[1], 2 ** 0.5) and final):
            continue
        x = div.input[0]
        if _scalar(inits, other(add, erf.output[0]), 1.0) and _scalar(inits, other(half, add.output[0]), 0.5) \
                and other(final, half.output[0]) == x and len(users[div.output[0]]) == 1:
            matches.append(([div, erf, add, half, final], x, final.output[0]))
    return matches


def fuse_erf_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the exact-GELU subgraph ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` by ONNX ``Gelu`` (opset 20).

    Why: opset-18 exports spell GELU out with Erf; onnx2tf then builds Erf from builtins with
    activation divides that full-integer TFLite cannot run (``div.cc data[i] != zero_point``),
    while ``Gelu`` becomes TFLite's GELU builtin, which has an int8 kernel (a lookup table) and is
    the same function. The default-domain opset is raised to 20 (ops from 18 to 20 keep their
    meaning, except GridSample's mode names: a graph with GridSample is returned unchanged).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    matches = _erf_gelus(out.graph)
    if not matches or any(n.op_type == "GridSample" for n in out.graph.node):
        return out
    dropped = {id(n) for nodes, _, _ in matches for n in nodes}
    gelu_at = {id(nodes[-1]): helper.make_node("Gelu", [x], [y], name=(nodes[-1].name or "gelu") + "_gelu")
               for nodes, x, y in matches}
    kept = [gelu_at.get(id(n), n) for n in out.graph.node if id(n) not in dropped or id(n) in gelu_at]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    for opset in out.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 20)
    _drop_unused_initializers(out.graph)
    onnx.checker.check_model(out)
    return out
