"""Token inputs end to end through `edgekit build`: a tiny BERT-style encoder (defined in
tests/tiny_models.py), the bundled text calibration set tokenized by the model file's own
``tokenize_text`` hook, every transformer scheme of the host profile, and the device runner."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tiny_models import model_file_source

MODEL_FILE = model_file_source()


@pytest.fixture(scope="module")
def token_bundle(tmp_path_factory, build_bundle):
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "tiny_encoder.py").write_text(MODEL_FILE)
    out = folder / "bundle"
    return out, build_bundle(out, "host", f"{folder / 'tiny_encoder.py'}:factory", latency_runs=10)


def test_every_transformer_scheme_is_built_and_verified(token_bundle):
    _, manifest = token_bundle
    files = {a["file"]: a for a in manifest["artifacts"]}
    expected = {"model_fp32.tflite", "model_fp16.tflite", "model_int8_dynamic.tflite", "model_int8_fallback.tflite", "model_fp32.onnx",
                "model_int8.onnx", "model_int8_dynamic.onnx", "model_int4.onnx"}
    assert expected <= set(files)
    assert all(a["verification"]["passed"] for a in files.values()), {f: a["verification"] for f, a in files.items()}
    assert manifest["inputs"][0] == {"name": "input_ids", "shape": [1, 16], "dtype": "int64"}
    assert files["model_int8_dynamic.onnx"]["bytes"] < 0.6 * files["model_fp32.onnx"]["bytes"]


def test_embedding_quality_on_heldout_sentences(token_bundle):
    _, manifest = token_bundle
    quality = manifest["accuracy"]
    assert quality["metric"] == "embedding_cosine" and quality["dataset"] == "text:heldout" and quality["samples"] == 64
    assert quality["min_per_artifact"]["model_fp32.tflite"] > 0.9999
    assert quality["per_artifact"]["model_int8_dynamic.onnx"] > 0.98
    assert quality["per_artifact"]["model_int4.onnx"] > 0.9


def test_runner_feeds_token_inputs(token_bundle, tmp_path):
    out, manifest = token_bundle
    with np.load(out / "golden.npz", allow_pickle=False) as golden:
        assert golden["input_ids"].dtype == np.int64 and golden["input_ids"].shape[1:] == (1, 16)
    report = tmp_path / "r.json"
    result = subprocess.run([sys.executable, str(out / "edgekit_runner.py"), str(out), "--runs", "5", "--min-seconds", "0",
                             "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    results = {r["file"]: r["correctness"] for r in json.loads(report.read_text())["results"]}
    for artifact in manifest["artifacts"]:
        assert abs(results[artifact["file"]]["cosine"] - artifact["verification"]["cosine"]) < 1e-5
