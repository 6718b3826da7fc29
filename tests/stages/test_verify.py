"""Verdicts by the target's arithmetic (edgekit/stages/verify.py and the runner's rule it imports).

What is asserted holds on every x86-64 CPU class: reference-semantics figures (QDQ as float) and
per-profile tolerances. Figures of this host's own int8 kernels differ between AVX2-only and VNNI
CPUs (GUIDE.md section 2), so they are only checked to be present and labelled, never judged.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.runner import edgekit_runner as runner
from edgekit.stages import verify
from edgekit.verify import hostinfo


def test_build_uses_the_runners_tolerance_rule() -> None:
    assert verify.broken_bounds is runner.broken_bounds and verify.compare is runner.compare
    ok = {"max_abs_err": 0.1, "cosine": 0.999, "top1_agreement": 1.0}
    assert runner.broken_bounds(ok, {"max_abs_err": 0.2, "min_cosine": 0.99, "min_top1_agreement": 1.0}) == []
    assert runner.broken_bounds(ok, {"max_abs_err": 0.05}) == ["max abs err 0.1 > 0.05"]
    nan = {"max_abs_err": float("nan"), "cosine": float("nan"), "top1_agreement": 0.0}
    assert runner.broken_bounds(nan, {}) == ["outputs contain NaN or Inf"]  # no bound set: NaN still fails


def test_multi_output_agreement_is_the_worst_output() -> None:
    golden = {"a": np.ones((4, 3)), "b": np.ones((4, 3))}
    got = {"a": np.ones((4, 3)), "b": np.ones((4, 3)) * np.array([1.0, 1.0, 2.0])}
    m = runner.compare(got, golden, classification=False)
    assert m["max_abs_err"] == 1.0
    assert m["cosine"] == pytest.approx(4 / np.sqrt(3 * 6))  # output b alone, not a and b mixed


@pytest.mark.parametrize(("device", "fmt", "expected"), [
    ({"arch": "aarch64", "isa": "armv8.0-a", "features": ["neon"]}, "onnx", "reference"),
    ({"arch": "aarch64", "isa": "armv8.0-a", "features": ["neon"]}, "ort", "reference"),
    ({"arch": "aarch64", "isa": "armv8.0-a", "features": ["neon"]}, "tflite", "kernels"),
    ({"isa": "armv8.2-a"}, "onnx", "reference"),  # older manifests: arch from the ISA
    ({"arch": "x86_64", "isa": "x86-64-v3", "features": ["avx2", "fma"]}, "onnx", "kernels"),
    ({"arch": "x86_64", "isa": "x86-64-v4", "features": ["no-such-feature"]}, "onnx", "reference"),
])
def test_semantics_follow_the_target(device: dict, fmt: str, expected: str) -> None:
    if runner.host_arch() != "x86_64" or not {"avx2", "fma"} <= hostinfo.cpu_flags():
        pytest.skip("the table is written for an x86-64-v3 build host")
    assert runner.semantics({"device": device, "artifacts": []}, {"file": f"m.{fmt}", "format": fmt}) == expected


def _matmul_integer_model(path: Path, b: np.ndarray, b_zp: np.ndarray) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    m, k = 4, b.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, b.shape[1]])],
        [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(131, np.uint8), "a_zp"),
         numpy_helper.from_array(b_zp, "b_zp")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_reference_model_computes_integer_matmul_exactly(tmp_path: Path) -> None:
    """The exact int32 result whatever the CPU: x86 u8s8 kernels without VNNI saturate here
    (every pair of products is 255 * 127 * 2 = 64770 > 32767), the reference does not."""
    rng = np.random.default_rng(0)
    b = rng.integers(-128, 128, (64, 8)).astype(np.int8)
    b[:, 0] = 127
    b_zp = rng.integers(-3, 3, 8).astype(np.int8)
    _matmul_integer_model(tmp_path / "mmi.onnx", b, b_zp)
    a = rng.integers(0, 256, (4, 64)).astype(np.uint8)
    a[0] = 255
    exact = (a.astype(np.int64) - 131) @ (b.astype(np.int64) - b_zp.astype(np.int64))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    model = runner.reference_model(tmp_path / "mmi.onnx")
    assert isinstance(model, bytes)  # rewritten: no MatMulInteger left to the CPU's kernels
    got = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    assert got.dtype == np.int32 and np.array_equal(got, exact)


def test_rpi4_verdicts_are_the_targets(example_bundle) -> None:
    """ARM target on an x86 host: ORT artifacts judged by reference semantics (0.345 max err for
    the digits int8 QDQ model on every x86 CPU), host kernels reported beside it, labelled."""
    _, manifest = example_bundle
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    for art in by_file.values():
        v = art["verification"]
        assert v["passed"], (art["file"], v)
        if art["format"] == "tflite":
            assert v["semantics"] == "kernels" and v["isa"] == hostinfo.int8_isa()
            assert not art["host_kernels"]
        else:
            assert v["semantics"] == "reference"
            assert art["host_kernels"]["isa"] == hostinfo.int8_isa() and art["host_kernels"]["judged"] is False
    assert by_file["model_int8.onnx"]["verification"]["max_abs_err"] == pytest.approx(0.3452, abs=2e-3)
    ort_file = by_file["model_int8.ort"]
    assert ort_file["reference_via"] == "model_int8.onnx"
    assert ort_file["verification"]["reference_file"] == "model_int8.onnx"
    # the .ort's own fused kernels beside its source, reported (exact here: the digits model fuses alike)
    assert ort_file["verification"]["max_abs_diff_to_reference_file"] <= 1e-4 * ort_file["verification"]["max_abs_ref"]
    assert by_file["model_int8.onnx"]["quantization"]["activation_type"] == "int8"
    host = manifest["verified_on"]
    assert host["arch"] == runner.host_arch() and host["int8_isa"] == hostinfo.int8_isa()
    assert host["packages"]["onnxruntime"] == ort.__version__


def test_host_profile_scheme_fits_this_cpu(example_host_bundle) -> None:
    """The host is the target: its own kernels judge, and the int8 weights use the full range
    only on a CPU with VNNI (without it, ORT's u8s8 kernels saturate: reduce_range)."""
    int8 = next(a for a in example_host_bundle[1]["artifacts"] if a["file"] == "model_int8.onnx")
    assert int8["verification"]["semantics"] == "kernels" and int8["verification"]["passed"]
    assert int8["quantization"]["reduce_range"] is (not hostinfo.has_any(hostinfo.VNNI_FEATURES))
    assert int8["quantization"]["host_int8_isa"] == hostinfo.int8_isa()


NAN_MODEL = '''
import torch, torch.nn as nn
CALIBRATION = "digits"

class Broken(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * float("nan")

def factory():
    return Broken(), (torch.zeros(1, 1, 8, 8),)
'''


def test_nan_reference_refuses_the_model(tmp_path: Path) -> None:
    (tmp_path / "nan.py").write_text(NAN_MODEL)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", f"{tmp_path / 'nan.py'}:factory", "--target", "rpi4",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1 and "NaN or Inf on 32 of 32 verification samples" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "converting" not in proc.stderr.lower()  # refused before any conversion
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "nan.py"]
