"""The compression stage inside a real build, and bad recipes refused before any work."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from test_cli import assert_one_line_error, edgekit


@pytest.fixture(scope="module")
def pruned_qat_bundle(tmp_path_factory, build_bundle):
    out = tmp_path_factory.mktemp("compress") / "bundle"
    return out, build_bundle(out, "rpi4", recipe=("prune=structured:0.5,finetune_epochs=8", "qat=epochs=1"), latency_runs=0)


def test_structured_pruning_and_qat_in_a_build(pruned_qat_bundle):
    out, manifest = pruned_qat_bundle
    steps = {s["method"]: s for s in manifest["compression"]}
    assert list(steps) == ["original", "prune", "qat"]
    assert steps["prune"]["params"] <= 0.35 * steps["original"]["params"]  # 50 % of channels ~ 75 % of conv weights
    assert steps["prune"]["onnx_fp32_bytes"] < 0.4 * steps["original"]["onnx_fp32_bytes"]
    channels = {k: v for k, v in steps["prune"]["details"]["channels"].items() if k != "classifier"}
    assert len(channels) == 3 and all(c % 4 == 0 for c in channels.values()), channels  # rpi4's channel_multiple
    assert steps["original"]["accuracy"] - steps["qat"]["accuracy"] <= 0.015
    files = {a["file"]: a for a in manifest["artifacts"]}
    assert files["model_int8_qat.onnx"]["verification"]["passed"]
    accuracy = manifest["accuracy"]["per_artifact"]
    assert accuracy["model_int8_qat.onnx"] >= accuracy["model_int8.onnx"] - 0.005
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["compression"][1]["settings"]["round_to"] == 4
    with Image.open(out / "reports" / "size_vs_accuracy.png") as image:
        assert image.size == (800, 500) and len(set(image.convert("RGB").getdata())) > 50


BAD = {
    "ratio out of range": (["--prune", "structured:1.5"], "ratio"),
    "unknown prune kind": (["--prune", "sideways:0.5"], "sideways"),
    "lowrank without linear layers": (["--lowrank", "energy:0.9"], "lowrank"),
    "bad epochs": (["--qat", "epochs=0"], "epochs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_are_refused_before_work(case, tmp_path, tiny_model_file):
    args, needle = BAD[case]
    model = f"{tiny_model_file}:conv_only" if "lowrank" in case else f"{tiny_model_file}:factory"
    result = edgekit("build", model, "--target", "rpi4", "--out", str(tmp_path / "out"), *args, cwd=tmp_path)
    assert_one_line_error(result, needle)
    assert "compressing" not in result.stderr or "ONNX" not in result.stderr  # stopped before export
    assert not (tmp_path / "out").exists()


def test_unknown_method_in_recipe_file(tmp_path, tiny_model_file):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[compress]]\nmethod = "shrink"\nratio = 0.5\n')
    result = edgekit("build", f"{tiny_model_file}:factory", "--target", "rpi4", "--recipe", str(recipe), cwd=tmp_path)
    assert_one_line_error(result, "shrink")


def test_compression_refused_for_onnx_input(tmp_path):
    import torch

    path = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(path), dynamo=True, external_data=False)
    result = edgekit("build", str(path), "--target", "rpi4", "--calibration", "digits", "--prune", "structured:0.5", cwd=tmp_path)
    assert_one_line_error(result, "compression needs a PyTorch model")


def test_user_train_data_and_evaluate_hooks(tmp_path, tiny_model_file, build_bundle):
    manifest = build_bundle(tmp_path / "out", "rpi4", f"{tiny_model_file}:factory",
                            recipe=("prune=unstructured:0.5,finetune_epochs=2",), latency_runs=0)
    original, pruned = manifest["compression"]
    assert original["user_metrics"]["hook_samples"] == 100  # the hook's own eval split, not the calibration set
    assert pruned["user_metrics"]["hook_samples"] == 100
    assert abs(pruned["user_metrics"]["hook_top1"] - pruned["accuracy"]) < 1e-6  # same split, same model
    assert abs(pruned["sparsity"] - 0.5) < 0.02


def test_each_step_is_measured_on_the_graph_the_export_stage_ships(tmp_path, tiny_model_file):
    """The per-step figures come from the export the build ships: the profile's opset and the
    stage's exporter, hence the very same graph (ops, opset, bytes) for the same model."""
    import numpy as np
    import onnx

    from edgekit.calibration import CalibrationSet
    from edgekit.compress.metrics import onnx_size_and_latency, step_onnx
    from edgekit.context import BuildContext
    from edgekit.options import BuildOptions
    from edgekit.stages.export_onnx import ExportOnnx
    from edgekit.stages.load import LoadModel
    from edgekit.targets import load_target

    profile = load_target("rpi4")
    ctx = BuildContext(BuildOptions(target="rpi4", model=f"{tiny_model_file}:factory"), profile,
                       tmp_path / "bundle", tmp_path)
    LoadModel().run(ctx)
    samples = {"input": np.random.default_rng(0).random((2, 1, 1, 8, 8)).astype(np.float32)}
    ctx.calibration = CalibrationSet("random", samples, samples)
    ExportOnnx().run(ctx)
    shipped = onnx.load(ctx.onnx_path)
    measured = onnx.load(step_onnx(ctx.model, ctx, tmp_path))
    assert [n.op_type for n in measured.graph.node] == [n.op_type for n in shipped.graph.node] == \
        ["Conv", "Relu", "Conv", "Relu", "ReduceMean", "Reshape", "Gemm"]  # legacy exporter: GlobalAveragePool, Flatten
    assert [o.version for o in measured.opset_import if o.domain == ""] == [profile.export.opset]
    assert [o.version for o in shipped.opset_import if o.domain == ""] == [profile.export.opset]
    figures = onnx_size_and_latency(ctx.model, ctx, runs=2)
    assert figures["onnx_fp32_bytes"] == ctx.onnx_path.stat().st_size == (tmp_path / "step.onnx").stat().st_size
    assert figures["ort_fp32_p50_ms"] > 0
