"""Exact ONNX rewrites: duplicate names, Gemm -> MatMul, ReduceL2 -> ReduceSum/Sqrt."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize.onnx_rewrites import gemm_to_matmul, op_counts, rewrite_for_onnx2tf

from tiny_models import cosines, ort_outputs, token_samples


def test_dedupe_makes_the_exported_file_loadable(tiny_raw_and_fixed, heldout):
    import onnxruntime as ort

    raw, fixed = tiny_raw_and_fixed
    with pytest.raises(Exception, match="Duplicate definition"):
        ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    model = onnx.load(str(fixed))
    assert [o.name for o in model.graph.output] == ["embedding"]
    outputs = [o for n in model.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    assert ort_outputs(fixed, heldout).shape == (32, 1, 32)


def test_gemm_to_matmul_on_the_exported_head(tiny_onnx, heldout, tmp_path):
    model = onnx.load(str(tiny_onnx))
    rewritten = gemm_to_matmul(model)
    before, after = op_counts(model), op_counts(rewritten)
    assert before["Gemm"] == 1 and "Gemm" not in after
    assert after["MatMul"] == before["MatMul"] + 1
    onnx.save(rewritten, str(tmp_path / "mm.onnx"))
    np.testing.assert_allclose(ort_outputs(tmp_path / "mm.onnx", heldout), ort_outputs(tiny_onnx, heldout), atol=1e-5)


def test_gemm_to_matmul_honours_trans_b_alpha_and_beta(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(b.astype(np.float32), "b"), numpy_helper.from_array(c.astype(np.float32), "c")])
    model = gemm_to_matmul(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert op_counts(model) == {"MatMul": 1, "Add": 1}
    onnx.save(model, str(tmp_path / "g.onnx"))
    y = ort_outputs(tmp_path / "g.onnx", {"a": a.astype(np.float32)[None]})[0]
    np.testing.assert_allclose(y, 0.5 * a @ b.T + 2.0 * c, rtol=1e-5, atol=1e-5)


def test_rewrite_for_onnx2tf_removes_reduce_l2_exactly(tiny_normalized_onnx, heldout, tmp_path):
    model = onnx.load(str(tiny_normalized_onnx))
    rewritten = rewrite_for_onnx2tf(model)
    assert op_counts(model)["ReduceL2"] == 1 and "ReduceL2" not in op_counts(rewritten)
    assert op_counts(rewritten)["Sqrt"] == 1
    onnx.save(rewritten, str(tmp_path / "rw.onnx"))
    before, after = ort_outputs(tiny_normalized_onnx, heldout), ort_outputs(tmp_path / "rw.onnx", heldout)
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(after.reshape(32, -1), axis=1), 1.0, atol=1e-5)


def _litert_outputs(path, samples: dict[str, np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    inputs, output = interpreter.get_input_details(), interpreter.get_output_details()[0]
    results = []
    for i in range(len(samples["input_ids"])):
        for detail in inputs:
            name = detail["name"].removeprefix("serving_default_").split(":")[0]
            interpreter.set_tensor(detail["index"], samples[name][i].astype(detail["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(output["index"]).copy())
    return np.stack(results)


def test_onnx2tf_converts_the_rewritten_normalize(tiny_normalized_onnx, tmp_path):
    from edgekit.quantize.tflite_variants import convert_onnx

    onnx.save(rewrite_for_onnx2tf(onnx.load(str(tiny_normalized_onnx))), str(tmp_path / "rw.onnx"))
    out = convert_onnx(tmp_path / "rw.onnx", tmp_path / "tf", token_samples(8))
    samples = token_samples(8, seed=3)
    tflite = _litert_outputs(out / "rw_float32.tflite", samples)
    assert cosines(tflite, ort_outputs(tmp_path / "rw.onnx", samples)).min() > 0.99999


def test_onnx2tf_fails_on_reduce_l2_and_converts_the_rewrite(tmp_path):
    """Why the rewrite exists (onnx2tf 1.28.8: "'axis' must be None, an integer, or a tuple of 2
    unique integers"), and that the rewritten graph converts with the same outputs."""
    import torch

    from edgekit.errors import ConversionError
    from edgekit.quantize.tflite_variants import convert_onnx

    from tiny_models import NormalizeHead

    torch.onnx.export(NormalizeHead().eval(), (torch.zeros(1, 32),), str(tmp_path / "l2.onnx"), dynamo=True,
                      input_names=["x"], output_names=["y"])
    x = np.random.default_rng(0).standard_normal((4, 1, 32)).astype(np.float32)
    with pytest.raises(ConversionError, match="onnx2tf failed"):
        convert_onnx(tmp_path / "l2.onnx", tmp_path / "tf_l2", {"x": x})
    onnx.save(rewrite_for_onnx2tf(onnx.load(str(tmp_path / "l2.onnx"))), str(tmp_path / "rw.onnx"))
    out = convert_onnx(tmp_path / "rw.onnx", tmp_path / "tf_rw", {"x": x})
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(out / "rw_float32.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[0])
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(y, ort_outputs(tmp_path / "rw.onnx", {"x": x[:1]})[0], atol=1e-6)
