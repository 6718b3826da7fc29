"""A small vision transformer (LayerNorm, attention, GELU) on the image path, for every profile.

Before the fix, ``edgekit build --target rpi4`` crashed on it with a traceback from the int8
TFLite artifact (``div.cc data[i] != zero_point``, node (DIV) of onnx2tf's builtin-only Erf).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vit_model

PROFILES = ("rpi4", "arm64", "nnapi", "host")


@pytest.fixture(scope="session")
def vit_file(tmp_path_factory) -> Path:
    """A copy of ``vit_model.py`` with trained weights beside it."""
    folder = tmp_path_factory.mktemp("vit")
    shutil.copyfile(Path(vit_model.__file__), folder / "vit_model.py")
    top1 = vit_model.train_weights(folder)
    assert top1 > 0.8  # a model that learnt something: its outputs depend on the input
    return folder / "vit_model.py"


@pytest.fixture(scope="session")
def vit_bundles(tmp_path_factory, vit_file, build_bundle) -> dict:
    """``{profile: (bundle_dir, manifest)}``, each profile built at most once per session."""
    built: dict = {}

    def get(profile: str) -> tuple[Path, dict]:
        if profile not in built:
            out = tmp_path_factory.mktemp(f"vit-{profile}") / "bundle"
            built[profile] = (out, build_bundle(out, profile, f"{vit_file}:factory", latency_runs=0))
        return built[profile]

    return get


@pytest.mark.parametrize("profile", PROFILES)
def test_vit_builds_and_verifies_for_every_profile(vit_bundles, profile):
    out, manifest = vit_bundles(profile)
    tflite = [a for a in manifest["artifacts"] if a["format"] == "tflite"]
    assert {a["precision"] for a in tflite} >= {"fp32", "int8"}
    for artifact in manifest["artifacts"]:
        v = artifact["verification"]
        print(f"{profile} {artifact['file']}: cosine {v['cosine']:.5f}, max abs err {v['max_abs_err']:.3f}, "
              f"{artifact['bytes']} bytes")
        assert v["passed"], artifact["file"]
        assert (out / artifact["file"]).is_file()
    int8 = next(a for a in tflite if a["precision"] == "int8")
    assert int8["verification"]["cosine"] >= 0.99
    # the profile's integer I/O is kept although LayerNorm/Softmax run float inside
    assert [e["dtype"] for e in int8["inputs"] + int8["outputs"]] == ["int8", "int8"]


def _tflite_ops(path: Path) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    return dict(Counter(op["op_name"] for op in interpreter._get_ops_details()))  # noqa: SLF001


def test_rpi4_int8_tflite_cosine_on_held_out_digits(vit_bundles, vit_file):
    """Cosine to the PyTorch model on the digits ``eval`` split (never used for calibration)."""
    import torch

    from edgekit.modelspec import load
    from edgekit.tensors import TensorSpec
    from edgekit.verify.hostrun import TFLiteSession
    from edgekit.verify.metrics import per_sample_cosine
    from edgekit.verify.rule import cosine

    out, manifest = vit_bundles("rpi4")
    loaded = load(f"{vit_file}:factory")
    x, _ = vit_model.digits_split("eval")
    with torch.no_grad():
        reference = loaded.module(x).numpy()
    artifact = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    session = TFLiteSession(out / "model_int8.tflite", [TensorSpec("image", (1, 1, 8, 8), "float32", "NCHW")],
                            [TensorSpec("logits", (1, 10), "float32", None)], threads=1)
    assert session.inputs[0]["dtype"] == artifact["inputs"][0]["dtype"] == "int8"
    actual = session.run_batch({"image": x.numpy()[:, None]})["logits"][:, 0]
    measured = cosine(reference, actual)
    print(f"rpi4 int8 TFLite vs PyTorch on {len(x)} held-out digits: cosine {measured:.5f}, "
          f"min per sample {per_sample_cosine(reference, actual).min():.4f}")
    assert measured >= 0.99
    # the bound means something: a constant output (the mean logits) is far from it
    assert cosine(reference, np.broadcast_to(reference.mean(0), reference.shape)) < 0.9
    ops = _tflite_ops(out / "model_int8.tflite")
    assert ops.get("GELU") == 2 and "ERF" not in ops and "DIV" not in ops  # Erf-GELU fused to the builtin


FORCE_OLD_PATH = ("import edgekit.stages.tflite as t; t._sensitive_ops = lambda ctx: []; "
                  "t._tflite_source = lambda ctx, work: ctx.onnx_path; from edgekit.cli import main; main()")


def test_runtime_failure_of_an_artifact_is_exit_3_in_one_line(vit_file, tmp_path):
    """The pre-fix path forced back (full int8 via onnx2tf, Erf from builtins): the artifact the
    converter writes aborts at run time; the build says so in one line, exit 3, nothing left."""
    out = tmp_path / "bundle"
    result = subprocess.run([sys.executable, "-c", FORCE_OLD_PATH, "build", f"{vit_file}:factory", "--target", "rpi4",
                             "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "model_int8.tflite fails at run time" in errors[0] and "(DIV) failed to invoke" in errors[0], errors[0]
    assert not out.exists() and not list(tmp_path.glob(".bundle.tmp-*"))
