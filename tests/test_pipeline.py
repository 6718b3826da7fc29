"""End-to-end builds of tiny models: artifacts, manifest contract, determinism, model formats."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

MANIFEST_KEYS = {"edgekit_version", "target", "inputs", "outputs", "artifacts", "accuracy"}
ARTIFACT_KEYS = {"file", "format", "precision", "runtime", "bytes", "sha256", "inputs", "verification"}


def _by_file(manifest: dict) -> dict:
    return {a["file"]: a for a in manifest["artifacts"]}


def test_nnapi_bundle_uses_uint8_activations(tiny_nnapi_bundle):
    out, manifest = tiny_nnapi_bundle
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    zero_points = {i.name: i for i in graph.initializer if "zero_point" in i.name}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    activation_types = {zero_points[n.input[2]].data_type for n in q_nodes if n.input[2] in zero_points}
    assert activation_types == {onnx.TensorProto.UINT8}
    report = json.loads((out / "reports" / "model_int8.onnx.json").read_text())
    assert report["nnapi"]["partitions"] >= 1 and report["nnapi"]["nodes"] > 0
    assert set(_by_file(manifest)) == {"model_fp32.tflite", "model_int8.tflite", "model_int8.onnx", "model_int8.ort"}
    assert (out / "model_int8.required_operators.config").is_file()


def test_manifest_contract(tiny_nnapi_bundle):
    out, manifest = tiny_nnapi_bundle
    on_disk = json.loads((out / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(on_disk)
    for artifact in on_disk["artifacts"]:
        assert ARTIFACT_KEYS <= set(artifact)
        assert artifact["bytes"] == (out / artifact["file"]).stat().st_size
        assert {"max_abs_err", "cosine", "top1_agreement", "passed"} <= set(artifact["verification"])
    int8_tflite = _by_file(on_disk)["model_int8.tflite"]["inputs"][0]
    assert int8_tflite["dtype"] == "int8" and int8_tflite["perm"] == [0, 2, 3, 1]
    assert int8_tflite["quantization"]["scale"] > 0
    with np.load(out / "golden.npz", allow_pickle=False) as golden:
        assert golden["input"].shape[1:] == (1, 1, 8, 8) and golden["logits"].shape[1:] == (1, 10)


def test_int8_builds_are_byte_identical(tmp_path, tiny_model_file, build_bundle):
    spec = f"{tiny_model_file}:factory"
    first = build_bundle(tmp_path / "a", "host", spec, latency_runs=0)
    second = build_bundle(tmp_path / "b", "host", spec, latency_runs=0)
    hashes = [{a["file"]: a["sha256"] for a in m["artifacts"] if a["precision"] == "int8"} for m in (first, second)]
    assert len(hashes[0]) == 3 and hashes[0] == hashes[1]
    precisions = {(a["format"], a["precision"]) for a in first["artifacts"]}
    assert ("tflite", "fp16") in precisions and ("onnx", "fp32") in precisions  # the host profile asks for both


def test_onnx_input_is_built_and_verified(tmp_path, tiny_model_file, build_bundle):
    from edgekit.modelspec import load

    loaded = load(f"{tiny_model_file}:factory")
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(loaded.module, loaded.example_inputs, str(path), input_names=["input"], output_names=["logits"],
                      dynamo=True, external_data=False)
    manifest = build_bundle(tmp_path / "out", "rpi4", str(path), calibration="digits", latency_runs=0)
    assert all(a["verification"]["passed"] for a in manifest["artifacts"])
    assert manifest["inputs"][0]["shape"] == [1, 1, 8, 8]


def test_pt2_input_with_input_override(tmp_path, tiny_model_file, build_bundle):
    from edgekit.modelspec import load
    from edgekit.tensors import parse_input_spec

    loaded = load(f"{tiny_model_file}:factory")
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(loaded.module, loaded.example_inputs), str(path))
    manifest = build_bundle(tmp_path / "out", "rpi4", str(path), calibration="digits", latency_runs=0,
                            inputs=(parse_input_spec("input:1x1x8x8"),))
    assert manifest["inputs"][0]["name"] == "input"
    assert all(a["verification"]["passed"] for a in manifest["artifacts"])


def test_inspect_reports_ops_without_building(tmp_path, tiny_model_file):
    from edgekit.inspect import inspect_model, render

    report = inspect_model(f"{tiny_model_file}:factory", target="nnapi")
    assert report["onnx"]["ops"]["ai.onnx:Conv"] == 2
    assert report["onnx"]["nnapi"]["suitability"] in {"YES", "MAYBE", "NO"}
    assert report["tflite"]["ops"]["CONV_2D"] == 2 and report["tflite"]["delegated_fraction"] > 0.5
    assert "CONV_2D x2" in render(report)


def test_verification_failure_stops_the_build(tmp_path, tiny_model_file, build_bundle):
    from edgekit.errors import VerificationError
    from edgekit.paths import targets_dir

    strict = tmp_path / "strict.toml"
    text = (targets_dir() / "rpi4.toml").read_text()
    strict.write_text(text.replace("[tolerance.int8]\nmax_rel_err = 0.15", "[tolerance.int8]\nmax_rel_err = 1e-9"))
    with pytest.raises(VerificationError, match="model_int8"):
        build_bundle(tmp_path / "out", str(strict), f"{tiny_model_file}:factory", latency_runs=0)
    assert not (tmp_path / "out").exists()
    drift = build_bundle(tmp_path / "out", str(strict), f"{tiny_model_file}:factory", latency_runs=0, allow_drift=True)
    failed = [a["file"] for a in drift["artifacts"] if not a["verification"]["passed"]]
    assert "model_int8.tflite" in failed and "model_fp32.tflite" not in failed


def test_a_recipe_s_build_threads_set_the_build_s_thread_count(tmp_path, tiny_model_file, build_bundle):
    """``[build] threads`` (what a search trial records) sets torch's pool and the host sessions'
    count; ``BuildOptions.threads`` wins over it; anything else in ``[build]`` is refused first."""
    from edgekit import BuildOptions
    from edgekit.errors import UnsupportedError
    from edgekit.pipeline import resolved_threads

    spec, before = f"{tiny_model_file}:factory", torch.get_num_threads()
    recipe = tmp_path / "threads.toml"
    recipe.write_text("[build]\nthreads = 1\n")
    try:
        manifest = build_bundle(tmp_path / "one", "host", spec, latency_runs=2, recipe_file=recipe)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert {a["host_latency_ms"]["threads"] for a in manifest["artifacts"]} == {1}
    assert resolved_threads(BuildOptions(target="host", recipe_file=recipe, threads=2)) == 2
    assert resolved_threads(BuildOptions(target="host")) == os.cpu_count()
    recipe.write_text("[build]\nthreads = 0\nworkers = 2\n")
    with pytest.raises(UnsupportedError, match=r"\[build\] takes only threads = N"):
        build_bundle(tmp_path / "bad", "host", spec, recipe_file=recipe)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UnsupportedError, match="--threads 0 is not a thread count"):
        BuildOptions(target="host", threads=0)
