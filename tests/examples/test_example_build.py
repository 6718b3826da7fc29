"""The README's main job: `edgekit build --target rpi4` on the bundled digits example."""
from __future__ import annotations

import json

import numpy as np


def test_example_bundle_contents(example_bundle):
    out, manifest = example_bundle
    files = {a["file"]: a for a in manifest["artifacts"]}
    assert {"model_fp32.tflite", "model_int8.tflite", "model_int8.onnx", "model_int8.ort"} <= set(files)
    assert all(a["verification"]["passed"] for a in files.values())
    for name in ("manifest.json", "golden.npz", "README.md", "edgekit_runner.py"):
        assert (out / name).is_file(), name
    assert files["model_int8.tflite"]["inputs"][0]["dtype"] == "int8"  # rpi4: int8 I/O


def test_example_int8_accuracy_and_size(example_bundle):
    _, manifest = example_bundle
    accuracy = manifest["accuracy"]
    assert accuracy["samples"] == 360 and accuracy["reference"] >= 0.95
    per_artifact = accuracy["per_artifact"]
    assert abs(per_artifact["model_fp32.tflite"] - accuracy["reference"]) < 1e-9
    for name in ("model_int8.tflite", "model_int8.onnx", "model_int8.ort"):
        assert accuracy["reference"] - per_artifact[name] <= 0.005, (name, per_artifact[name], accuracy["reference"])
    files = {a["file"]: a for a in manifest["artifacts"]}
    assert files["model_int8.tflite"]["bytes"] <= 0.30 * files["model_fp32.tflite"]["bytes"]


def test_example_golden_matches_manifest(example_bundle):
    out, manifest = example_bundle
    with np.load(out / "golden.npz", allow_pickle=False) as golden:
        for spec in manifest["inputs"] + manifest["outputs"]:
            assert list(golden[spec["name"]].shape[1:]) == spec["shape"]
            assert len(golden[spec["name"]]) == manifest["golden"]["samples"]


def test_cli_example_build(example_cli_build):
    """The README's command (the session's example bundle is this build's): exit 0, the manifest
    printed by --json names the files written, every artifact verified."""
    out, result = example_cli_build
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    manifest = json.loads(result.stdout)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == on_disk["target"] == "rpi4"
    hashes = lambda m: {x["file"]: x["sha256"] for x in m["artifacts"]}  # noqa: E731
    assert hashes(manifest) == hashes(on_disk) and len(hashes(manifest)) == 4
    assert all(a["verification"]["passed"] for a in manifest["artifacts"])
