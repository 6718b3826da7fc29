"""The text examples through the whole build: all-MiniLM-L6-v2 and TinyGPT for rpi4."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _by_file(manifest: dict) -> dict:
    return {a["file"]: a for a in manifest["artifacts"]}


# minilm_bundle: tests/examples/conftest.py (one build per session, shared with test_minilm.py)


@pytest.mark.slow
def test_minilm_int8_and_int4_quality_and_size(minilm_bundle):
    _, manifest = minilm_bundle
    files, quality = _by_file(manifest), manifest["accuracy"]
    assert quality["metric"] == "embedding_cosine" and quality["samples"] == 64  # held-out sentences
    fp32 = {a["format"]: a["bytes"] for a in files.values() if a["precision"] == "fp32"}
    int8 = [f for f, a in files.items() if a["precision"] in ("int8", "int8_dynamic")]
    assert len(int8) >= 4
    for f in int8:
        assert quality["per_artifact"][f] >= 0.99 and quality["min_per_artifact"][f] >= 0.97, f
        assert files[f]["bytes"] <= 0.30 * fp32[files[f]["format"]], f  # vs fp32 of the same format
    assert files["model_int4.onnx"]["bytes"] <= 0.20 * fp32["onnx"]
    assert quality["per_artifact"]["model_int4.onnx"] >= 0.97
    assert all(a["verification"]["passed"] for a in files.values())


@pytest.mark.slow
def test_runner_reproduces_minilm_correctness(minilm_bundle, tmp_path):
    out, manifest = minilm_bundle
    report = tmp_path / "r.json"
    result = subprocess.run([sys.executable, str(out / "edgekit_runner.py"), str(out), "--runs", "3", "--warmup", "1",
                             "--min-seconds", "0", "--json", str(report)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    ran = {r["file"]: r["correctness"] for r in json.loads(report.read_text())["results"]}
    for f, artifact in _by_file(manifest).items():
        assert abs(ran[f]["max_abs_err"] - artifact["verification"]["max_abs_err"]) < 1e-4, f
        assert abs(ran[f]["cosine"] - artifact["verification"]["cosine"]) < 1e-5, f


@pytest.mark.slow
def test_tinygpt_perplexity_and_agreement(tmp_path, build_bundle):
    manifest = build_bundle(tmp_path / "gpt", "rpi4", "example:tinygpt", latency_runs=0)
    quality = manifest["accuracy"]
    assert quality["metric"] == "perplexity" and quality["reference"] < 10
    for f, a in _by_file(manifest).items():
        delta, agree = quality["perplexity_delta"][f], quality["next_token_agreement"][f]
        if a["precision"] in ("int8", "int8_dynamic"):
            assert delta <= 0.02 and agree >= 0.95, (f, delta, agree)
        if a["precision"] == "int4":
            assert delta <= 0.06, (f, delta)
