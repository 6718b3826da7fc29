"""TFLite variants of the tiny encoder from onnx2tf's SavedModel, run with ai-edge-litert."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.quantize.tflite_variants import (
    Int8FallbackOptions,
    convert_onnx,
    tflite_dynamic_range,
    tflite_fp16,
    tflite_int8_float_fallback,
)

from .test_onnx_rewrites import _litert_outputs
from tiny_models import cosines


@pytest.fixture(scope="module")
def saved_model(tiny_onnx, calibration, tmp_path_factory):
    return convert_onnx(tiny_onnx, tmp_path_factory.mktemp("onnx2tf"), calibration)


def _fp32(saved_model):
    return next(saved_model.glob("*_float32.tflite"))


def test_onnx2tf_fp32_matches_onnxruntime(saved_model, heldout, tiny_reference):
    assert (saved_model / "saved_model.pb").is_file()
    assert cosines(_litert_outputs(_fp32(saved_model), heldout), tiny_reference).min() > 0.99999


def test_dynamic_range_and_fp16(saved_model, heldout, tiny_reference, tmp_path):
    fp32_bytes = _fp32(saved_model).stat().st_size
    dynamic = tflite_dynamic_range(saved_model, tmp_path / "dr.tflite")
    fp16 = tflite_fp16(saved_model, tmp_path / "fp16.tflite")
    assert dynamic.stat().st_size < 0.5 * fp32_bytes  # the tiny model's fixed overhead: MiniLM is 0.26x
    assert fp16.stat().st_size < 0.75 * fp32_bytes
    assert cosines(_litert_outputs(dynamic, heldout), tiny_reference).min() > 0.999
    assert cosines(_litert_outputs(fp16, heldout), tiny_reference).min() > 0.99999


def test_int8_with_float_fallback_keeps_sensitive_ops_float(saved_model, calibration, heldout, tiny_reference, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    out = tflite_int8_float_fallback(saved_model, tmp_path / "i8.tflite", calibration)
    ops = Interpreter(str(out))._get_ops_details()
    quantized_fc = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    assert any(op["op_name"] == "QUANTIZE" for op in ops) and quantized_fc
    cos = cosines(_litert_outputs(out, heldout), tiny_reference)
    assert cos.mean() > 0.995 and cos.min() > 0.98


def test_int8_everything_is_worse_than_selective(saved_model, calibration, heldout, tiny_reference, tmp_path):
    everything = Int8FallbackOptions(float_ops=(), float_gelu_fed=False)
    full = tflite_int8_float_fallback(saved_model, tmp_path / "all.tflite", calibration, options=everything)
    selective = tflite_int8_float_fallback(saved_model, tmp_path / "sel.tflite", calibration)
    full_cos = cosines(_litert_outputs(full, heldout), tiny_reference).mean()
    assert full_cos < cosines(_litert_outputs(selective, heldout), tiny_reference).mean()
    assert np.isfinite(full_cos)
