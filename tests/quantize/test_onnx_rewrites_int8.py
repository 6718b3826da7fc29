"""The image path's graph facts: which ops full-integer TFLite must keep float, and the exact
Erf-GELU -> Gelu fusion (hand-built ONNX graphs, run by onnxruntime)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize.onnx_rewrites import fuse_erf_gelu, int8_sensitive_ops, op_counts


def _model(nodes: list, inits: dict[str, np.ndarray], opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _erf_gelu(final_order: tuple[str, str] = ("x", "h")) -> onnx.ModelProto:
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["half", "a"], ["h"]),
             helper.make_node("Mul", list(final_order), ["y"])]
    return _model(nodes, {"sqrt2": 2 ** 0.5, "one": 1.0, "half": 0.5})


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fuse_erf_gelu_is_exact_and_raises_the_opset():
    x = np.linspace(-6, 6, 16, dtype=np.float32).reshape(2, 8)
    for order in (("x", "h"), ("h", "x")):
        model = _erf_gelu(order)
        fused = fuse_erf_gelu(model)
        assert op_counts(fused) == {"Gelu": 1}
        assert {o.domain: o.version for o in fused.opset_import}[""] == 20
        assert not fused.graph.initializer
        assert float(np.max(np.abs(_run(fused, x) - _run(model, x)))) < 1e-6
    assert op_counts(_erf_gelu()) == {"Div": 1, "Erf": 1, "Add": 1, "Mul": 2}  # the input is not modified


def test_fuse_erf_gelu_leaves_other_erf_graphs_alone():
    wrong_factor = _erf_gelu()
    next(t for t in wrong_factor.graph.initializer if t.name == "half").CopyFrom(
        numpy_helper.from_array(np.asarray(0.6, np.float32), "half"))
    assert op_counts(fuse_erf_gelu(wrong_factor)) == op_counts(wrong_factor)
    plain_erf = _model([helper.make_node("Erf", ["x"], ["y"])], {})
    assert op_counts(fuse_erf_gelu(plain_erf)) == {"Erf": 1}
    assert {o.domain: o.version for o in fuse_erf_gelu(plain_erf).opset_import}[""] == 18


def test_int8_sensitive_ops_from_the_graph():
    assert int8_sensitive_ops(_erf_gelu()) == ["Erf"]  # x / sqrt(2) is a constant divisor
    computed = _model([helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1), helper.make_node("Div", ["x", "m"], ["y"])], {})
    assert int8_sensitive_ops(computed) == ["Div"]
    layer_norm = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1),
                         helper.make_node("Softmax", ["n"], ["y"])], {"g": np.ones(8), "b": np.zeros(8)})
    assert int8_sensitive_ops(layer_norm) == ["LayerNormalization", "Softmax"]
    cnn_like = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "s"], ["y"])], {"s": 2.0})
    assert int8_sensitive_ops(cnn_like) == []
