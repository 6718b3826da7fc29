"""The device runner on its own: no torch, no edgekit, only numpy and one runtime.

tox runs this folder in envs that install just that (`tox -e runner-litert-py311`, ...); the
main test env runs it too. The bundle is the README example built for rpi4 and committed
(regenerate: edgekit build --target rpi4 --out tests/runner_standalone/example_rpi4
--latency-runs 0 --force); tests/test_runner_fixture.py checks it matches a fresh build.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "example_rpi4"
# by path, not `from edgekit.runner import RUNNER_PATH`: the runner-* tox envs have no edgekit
RUNNER = HERE.parent.parent / "edgekit" / "runner" / "edgekit_runner.py"
MANIFEST = json.loads((BUNDLE / "manifest.json").read_text())
TFLITE = any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime"))
ORT = importlib.util.find_spec("onnxruntime") is not None


def _runnable(artifact: dict) -> bool:
    return TFLITE if artifact["format"] == "tflite" else ORT


ARTIFACTS = [a for a in MANIFEST["artifacts"] if _runnable(a)]


def test_environment_is_what_tox_promised():
    if os.environ.get("EDGEKIT_STANDALONE") != "1":
        pytest.skip("only meaningful inside a tox runner-* env")
    assert importlib.util.find_spec("torch") is None and importlib.util.find_spec("edgekit") is None
    assert ARTIFACTS, "this env has no runtime for any artifact"


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=[a["file"] for a in ARTIFACTS])
def test_artifact_matches_the_builds_verification(artifact, tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(RUNNER), str(BUNDLE), "--artifact", artifact["file"], "--runs", "10",
                             "--warmup", "2", "--min-seconds", "0", "--threads", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (report,) = json.loads(out.read_text())["results"]
    built = artifact["verification"]
    got = report["correctness"]
    assert got["passed"] and report["runs"] >= 10 and report["latency_ms"]["p50"] > 0
    assert got["top1_agreement"] == built["top1_agreement"]
    # int8 kernels may round differently across runtime versions (tflite-runtime 2.14 vs
    # ai-edge-litert 2.3): allow one output quantization step; float paths agree to 1e-4.
    quant = artifact["outputs"][0].get("quantization")
    step = quant["scale"] if quant else (0.35 / 127 if artifact["precision"] == "int8" else 1e-4)
    assert abs(got["max_abs_err"] - built["max_abs_err"]) <= step + 1e-6
    assert abs(got["cosine"] - built["cosine"]) <= 1e-3
