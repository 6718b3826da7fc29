"""ORT transformer schemes on the tiny encoder: node types, accuracy and weight bytes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.quantize._io import CalibrationReader
from edgekit.quantize.onnx_rewrites import op_counts
from edgekit.quantize.ort_dynamic import DynamicInt8Options, quantize_dynamic_int8
from edgekit.quantize.ort_int4 import Int4Options, quantize_int4_weights
from edgekit.quantize.ort_static_transformer import (
    SENSITIVE_OP_TYPES,
    StaticTransformerOptions,
    quantize_static_transformer,
)

from tiny_models import cosines, ort_outputs


def weight_bytes(path) -> int:
    """Initializer bytes (the tiny model's file is dominated by the exporter's node metadata)."""
    return sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer)


def test_dynamic_int8_per_channel(tiny_onnx, heldout, tiny_reference, tmp_path):
    out = quantize_dynamic_int8(tiny_onnx, tmp_path / "dyn.onnx")
    ops = op_counts(onnx.load(str(out)))
    # 12 layer projections + the head (ORT rewrites the Gemm into MatMul + Add); attention MatMuls stay float
    assert ops["MatMulInteger"] == 13
    assert ops["MatMul"] == 4 and ops["DynamicQuantizeLinear"] > 0
    cos = cosines(ort_outputs(out, heldout, reference=True), tiny_reference)
    assert cos.mean() > 0.9999 and cos.min() > 0.999
    assert weight_bytes(out) < 0.33 * weight_bytes(tiny_onnx)


def test_dynamic_options_are_passed(tiny_onnx, tmp_path):
    out = quantize_dynamic_int8(tiny_onnx, tmp_path / "dyn.onnx", options=DynamicInt8Options(op_types=("Gather",)))
    ops = op_counts(onnx.load(str(out)))
    assert "MatMulInteger" not in ops and ops["DequantizeLinear"] == 1  # only the embedding table


def test_static_qdq_keeps_sensitive_ops_float(tiny_onnx, calibration, heldout, tiny_reference, tmp_path):
    out = quantize_static_transformer(tiny_onnx, tmp_path / "static.onnx", calibration)
    graph = onnx.load(str(out)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    dq_fed = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")
              and all(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear" for i in n.input[:2])]
    assert len(dq_fed) == 11  # q, k, v, o and FFN up in both layers + the head; not Q.K^T, P.V, FFN down
    for node in graph.node:
        if node.op_type in SENSITIVE_OP_TYPES:  # LayerNorm, Softmax, Gelu, pooling: float in, float out
            assert all(made_by.get(i) is None or made_by[i].op_type != "DequantizeLinear" for i in node.input), node.name
    # the FFN down-projections (fed by GELU) get int8 weights but keep a float activation
    down = [n for n in graph.node if n.op_type == "MatMul" and made_by.get(n.input[0]) is not None
            and made_by[n.input[0]].op_type == "Gelu"]
    assert len(down) == 2 and all(made_by[n.input[1]].op_type == "DequantizeLinear" for n in down)
    cos = cosines(ort_outputs(out, heldout, reference=True), tiny_reference)
    assert cos.mean() > 0.999 and cos.min() > 0.99
    assert weight_bytes(out) < 0.33 * weight_bytes(tiny_onnx)


def test_static_without_weight_only_quantizes_the_gelu_input(tiny_onnx, calibration, tmp_path):
    options = StaticTransformerOptions(gelu_fed="static")
    graph = onnx.load(str(quantize_static_transformer(tiny_onnx, tmp_path / "s.onnx", calibration, options=options))).graph
    made_by = {o: n for n in graph.node for o in n.output}
    gelu_consumers = [n for n in graph.node if any(made_by.get(i) is not None and made_by[i].op_type == "Gelu" for i in n.input)]
    assert {n.op_type for n in gelu_consumers} == {"QuantizeLinear"}


def test_static_with_dynamic_gelu_fed_projections(tiny_onnx, calibration, heldout, tiny_reference, tmp_path):
    options = StaticTransformerOptions(gelu_fed="dynamic")
    out = quantize_static_transformer(tiny_onnx, tmp_path / "s.onnx", calibration, options=options)
    assert op_counts(onnx.load(str(out)))["MatMulInteger"] == 2  # the two FFN down-projections
    assert cosines(ort_outputs(out, heldout, reference=True), tiny_reference).min() > 0.99


def test_calibration_reader_yields_int64_samples_and_rewinds(calibration):
    reader = CalibrationReader(calibration)
    rows = list(iter(reader.get_next, None))
    assert len(rows) == len(reader) == 64
    assert rows[0]["input_ids"].shape == (1, 16) and rows[0]["input_ids"].dtype == np.int64
    reader.rewind()
    assert np.array_equal(reader.get_next()["attention_mask"], rows[0]["attention_mask"])
    with pytest.raises(ValueError, match="different sample counts"):
        CalibrationReader({"a": np.zeros((2, 1, 4)), "b": np.zeros((3, 1, 4))})


def test_int4_rewrites_gemm_and_quantizes_every_weight(tiny_onnx, heldout, tiny_reference, tmp_path):
    assert op_counts(onnx.load(str(tiny_onnx)))["Gemm"] == 1
    out = quantize_int4_weights(tiny_onnx, tmp_path / "int4.onnx", options=Int4Options(block_size=16))
    ops = op_counts(onnx.load(str(out)))
    assert ops["MatMulNBits"] == 13 and ops["GatherBlockQuantized"] == 1 and "Gemm" not in ops
    cos = cosines(ort_outputs(out, heldout), tiny_reference)
    assert cos.mean() > 0.99 and cos.min() > 0.98
    assert weight_bytes(out) < 0.25 * weight_bytes(tiny_onnx)


def test_invalid_options_are_refused_before_work(tiny_onnx, calibration, tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        quantize_int4_weights(tiny_onnx, tmp_path / "x.onnx", options=Int4Options(block_size=24))
    with pytest.raises(ValueError, match="algorithm"):
        quantize_int4_weights(tiny_onnx, tmp_path / "x.onnx", options=Int4Options(algorithm="gptq"))
    with pytest.raises(ValueError, match="calibrate_method"):
        quantize_static_transformer(tiny_onnx, tmp_path / "x.onnx", calibration,
                                    options=StaticTransformerOptions(calibrate_method="kl"))
    with pytest.raises(ValueError, match="gelu_fed"):
        quantize_static_transformer(tiny_onnx, tmp_path / "x.onnx", calibration,
                                    options=StaticTransformerOptions(gelu_fed="float"))
    with pytest.raises(ValueError, match="quantization type"):
        quantize_dynamic_int8(tiny_onnx, tmp_path / "x.onnx", options=DynamicInt8Options(weight_type="int4"))
