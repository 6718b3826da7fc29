"""edgekit.llm.quantize on a tiny llama exported in the KV contract, run by ONNX Runtime."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgekit.llm.quantize import QuantizeError, QuantOptions, activation_diags, contract_feed, head_gram, quantize_onnx
from tests.tiny_models import tiny_llama_folder

DIMS = (2, 2, 16)  # layers, kv heads, head dim of tiny_llama_folder


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in the KV contract (its exporter folds the head's Transpose: a second copy)."""
    from edgekit.llm.export import export_decoder
    from edgekit.llm.model import load_decoder

    root = tmp_path_factory.mktemp("llmq")
    _, decoder = load_decoder(tiny_llama_folder(root / "hf"), context=64)
    export_decoder(decoder, root / "fp32.onnx", opset=18)
    return root / "fp32.onnx"


@pytest.fixture(scope="module")
def diags(fp32: Path) -> dict:
    rng = np.random.default_rng(1)  # "calibration" text: random token windows, not the test prompt
    return activation_diags(fp32, [rng.integers(3, 96, 24).tolist() for _ in range(4)])


def _logits(path: Path) -> np.ndarray:
    import onnxruntime as ort

    ids = [1, 17, 42, 5, 88, 23, 9, 61, 30, 4]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], contract_feed(ids, np.arange(len(ids)), *DIMS))[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The worst row's cosine."""
    return float(min((x @ y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)))


def _ops(path: Path) -> dict[str, int]:
    import onnx

    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def test_int8_is_near_lossless(fp32: Path, tmp_path: Path) -> None:
    report = quantize_onnx(fp32, tmp_path / "int8.onnx", QuantOptions(bits=8, scheme="rtn_sym"))
    ops = _ops(tmp_path / "int8.onnx")
    # per layer (the export fuses q/k/v and gate/up): qkv, o, gate/up, down; plus the head
    assert ops["MatMulNBits"] == 2 * 4 + 1 and ops["Split"] == 2 * 2 and ops["GatherBlockQuantized"] == 1
    assert _ops(fp32)["MatMul"] == 2 * 4 + 1 and "MatMul" not in ops  # attention runs inside the Attention op
    assert "GatherND" not in _ops(tmp_path / "int8.onnx") or ops["GatherND"] == _ops(fp32)["GatherND"] - 1
    assert _cosine(_logits(tmp_path / "int8.onnx"), _logits(fp32)) > 0.999
    assert report.ratio < 0.5 and all(layer.bits == 8 for layer in report.layers)
    quantize_onnx(fp32, tmp_path / "unfused.onnx", QuantOptions(bits=8, scheme="rtn_sym", fuse=False))
    assert _ops(tmp_path / "unfused.onnx")["MatMulNBits"] == 2 * 4 + 1  # already one MatMul per group
    np.testing.assert_allclose(_logits(tmp_path / "unfused.onnx"), _logits(tmp_path / "int8.onnx"), atol=1e-4)


def test_int4_search_beats_rtn_and_is_deterministic(fp32: Path, diags: dict, tmp_path: Path) -> None:
    opts = QuantOptions(max_ratio=0.0)  # every projection at 4 bits
    report = quantize_onnx(fp32, tmp_path / "a.onnx", opts, diags)
    quantize_onnx(fp32, tmp_path / "b.onnx", opts, diags)
    rtn = quantize_onnx(fp32, tmp_path / "rtn.onnx", QuantOptions(scheme="rtn", max_ratio=0.0))
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.onnx", "b.onnx")]
    assert digest[0] == digest[1]
    body = [layer for layer in report.layers if layer.role == "projection"]
    assert len(body) == 8 and all(layer.bits == 4 and layer.error <= layer.rtn_error for layer in body)
    assert sum(layer.error for layer in body) < 0.95 * sum(layer.rtn_error for layer in body)
    ref = _logits(fp32)
    searched, rounded = _cosine(_logits(tmp_path / "a.onnx"), ref), _cosine(_logits(tmp_path / "rtn.onnx"), ref)
    assert searched > 0.985 and rounded > 0.98 and searched > rounded
    assert rtn.bytes == report.bytes and report.ratio < 0.40


def test_tied_table_is_stored_once(fp32: Path, tmp_path: Path) -> None:
    import onnx

    quantize_onnx(fp32, tmp_path / "q.onnx", QuantOptions(scheme="rtn"))
    tables = [t for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer if t.dims and t.dims[0] == 96]
    packed = [t for t in tables if t.data_type == onnx.TensorProto.UINT8]
    assert len(packed) == 1 and packed[0].name.endswith("_Q8") and list(packed[0].dims) == [96, 2, 32]
    assert not [t.name for t in tables if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and t.dims[1] == 64]
    # ...and stays once after ONNX Runtime's constant folding (what a session holds, what .ort stores)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    folded = [t for t in onnx.load(str(tmp_path / "folded.onnx")).graph.initializer
              if t.dims and t.dims[0] == 96 and t.data_type == onnx.TensorProto.UINT8]
    assert len(folded) == 1, [(t.name, list(t.dims)) for t in folded]


def test_promotion_respects_the_budget(fp32: Path, diags: dict, tmp_path: Path) -> None:
    loose = quantize_onnx(fp32, tmp_path / "loose.onnx", QuantOptions(max_ratio=1.0, promote_factor=0.0), diags)
    assert all(layer.bits == 8 for layer in loose.layers)
    tight = quantize_onnx(fp32, tmp_path / "tight.onnx", QuantOptions(max_ratio=0.0), diags)
    assert [layer.bits for layer in tight.layers].count(8) == 1  # the head only


def test_search_without_calibration_is_a_one_line_error(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="calibration activations"):
        quantize_onnx(fp32, tmp_path / "x.onnx", QuantOptions(scheme="search"))
    assert not (tmp_path / "x.onnx").exists()


def _embeddings(path: Path, fp32: Path, ids: list[int]) -> np.ndarray:
    """The lookup's output (the rows fed to the first block) for ``ids``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    lookup = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "GatherND")
    model.graph.output.extend([onnx.ValueInfoProto(name=lookup.output[0])])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([lookup.output[0]], contract_feed(ids, [len(ids) - 1], *DIMS))[0].reshape(len(ids), -1)


def test_gptq_head_is_int4_closer_than_rtn_with_an_8_bit_lookup(fp32: Path, diags: dict, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(1)  # the diags fixture's windows
    gram = head_gram(fp32, [rng.integers(3, 96, 24).tolist() for _ in range(4)])
    opts = QuantOptions(head_bits=4, head_scheme="gptq", max_ratio=0.0)
    report = quantize_onnx(fp32, tmp_path / "a.onnx", opts, diags, gram)
    quantize_onnx(fp32, tmp_path / "b.onnx", opts, diags, gram)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    rtn = quantize_onnx(fp32, tmp_path / "rtn.onnx", QuantOptions(head_bits=4, max_ratio=0.0), diags)
    head = [layer for layer in report.layers if layer.role == "tied_head"]
    assert [(layer.bits, layer.scheme) for layer in head] == [(4, "gptq")]
    heads = {n.name: n for n in onnx.load(str(tmp_path / "a.onnx")).graph.node if n.op_type == "MatMulNBits"}
    assert {a.name: a.i for a in heads[max(heads)].attribute if a.name in ("bits", "N")} == {"bits": 4, "N": 96}
    ref = _logits(fp32)
    assert _cosine(_logits(tmp_path / "a.onnx"), ref) > _cosine(_logits(tmp_path / "rtn.onnx"), ref)
    # the lookup reads head + residual: near 8-bit rows, where the 4-bit table alone is coarse
    table = numpy_helper.to_array(next(t for t in onnx.load(str(fp32)).graph.initializer if list(t.dims) == [96, 64]))
    ids = [1, 17, 42, 5, 88]
    err = np.abs(_embeddings(tmp_path / "a.onnx", fp32, ids) - table[ids]).max()
    err4 = np.abs(_embeddings(tmp_path / "rtn.onnx", fp32, ids) - table[ids]).max()
    assert err < np.abs(table).max() / 100 and err < err4 / 4
    assert report.bytes < rtn.bytes + 96 * 64  # a 4-bit residual beside the table, not a second 8-bit one (6,912 B)


def test_gptq_head_needs_its_gram_and_4_bits(fp32: Path, diags: dict, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="Gram"):
        quantize_onnx(fp32, tmp_path / "x.onnx", QuantOptions(head_bits=4, head_scheme="gptq"), diags)
    with pytest.raises(QuantizeError, match="gptq"):
        quantize_onnx(fp32, tmp_path / "x.onnx", QuantOptions(head_bits=8, head_scheme="gptq"), diags, np.eye(64))
    assert not (tmp_path / "x.onnx").exists()


def _grid_matrix(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """[K, N] on a GGUF Q4_1 grid: per output column, blocks of 32 inputs at d * q + min."""
    w = rng.standard_normal((n, k // 32, 32)).astype(np.float32)
    lo, d = w.min(-1, keepdims=True), (w.max(-1, keepdims=True) - w.min(-1, keepdims=True)) / 15
    return (np.rint((w - lo) / d) * d + lo).reshape(n, k).T.copy()


def test_grid_weights_come_back_exactly(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w0": _grid_matrix(rng, 64, 96), "w1": _grid_matrix(rng, 64, 32), "w2": rng.standard_normal((96, 64))}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["a"], name="m0"), helper.make_node("MatMul", ["x", "w1"], ["b"], name="m1"),
             helper.make_node("MatMul", ["a", "w2"], ["c"], name="m2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 64])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "bc"],
                              [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    report = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx",
                           QuantOptions(scheme="grid", head_bits=0, accuracy_level=3, max_ratio=0.0))
    assert [dict(layer.picks) for layer in report.layers][:2] == [{"grid": 192}, {"grid": 64}]
    assert report.layers[0].error < 1e-12 and report.layers[2].error > 1e-4  # w2 is off-grid: RTN fallback
    x = rng.standard_normal((5, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["b"], {"x": x})[0]
    out = ort.InferenceSession(str(tmp_path / "q.onnx")).run(["b"], {"x": x})[0]
    assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()
