"""Bad input gets one clear line, a non-zero exit, no traceback, and no half-written output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture()
def corrupt_onnx(tmp_path) -> Path:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not protobuf" * 10)
    return path


@pytest.fixture()
def wrong_calibration(tmp_path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "samples.npy", np.zeros((8, 3, 32, 32), np.float32))
    return folder


CASES = {
    "missing file": (["build", "nope/model.py:factory", "--target", "rpi4"], ["does not exist", "nope/model.py"]),
    "bad factory spec": (["build", "{tiny}:no_such_fn", "--target", "rpi4"], ["no callable 'no_such_fn'"]),
    "not a module": (["build", "{tiny}:not_a_module", "--target", "rpi4"], ["not an nn.Module"]),
    "factory raises": (["build", "{tiny}:broken", "--target", "rpi4"], ["RuntimeError: boom"]),
    "no example inputs": (["build", "{tiny}:no_example", "--target", "rpi4"], ["--input"]),
    "wrong shape": (["build", "{tiny}:factory", "--target", "rpi4", "--input", "input:1x3x8x8"], ["rejects inputs", "input:1x3x8x8"]),
    "bad input spec": (["build", "{tiny}:factory", "--target", "rpi4", "--input", "input=1x3"], ["bad --input"]),
    "unknown target": (["build", "--target", "toaster"], ["unknown target 'toaster'", "rpi4"]),
    "corrupt onnx": (["build", "{onnx}", "--target", "rpi4"], ["not a valid ONNX model"]),
    "wrong calibration shape": (["build", "{tiny}:factory", "--target", "rpi4", "--calibration", "{calib}"],
                                ["[8, 3, 32, 32]", "[1, 1, 8, 8]"]),
    "missing calibration folder": (["build", "{tiny}:factory", "--target", "rpi4", "--calibration", "./nowhere"], ["does not exist"]),
    "unknown calibration set": (["build", "{tiny}:factory", "--target", "rpi4", "--calibration", "imagenet"], ["unknown calibration set"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, tiny_model_file, corrupt_onnx, wrong_calibration):
    args, needles = CASES[case]
    args = [a.format(tiny=tiny_model_file, onnx=corrupt_onnx, calib=wrong_calibration) for a in args]
    result = edgekit(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")], "half-written bundle left behind"


def test_failed_build_keeps_the_earlier_bundle(tmp_path, tiny_model_file, wrong_calibration):
    out = tmp_path / "out"
    out.mkdir()
    earlier = '{"schema": 1, "artifacts": []}'
    (out / "manifest.json").write_text(earlier)
    refused = edgekit("build", f"{tiny_model_file}:factory", "--target", "rpi4", "--out", str(out), cwd=tmp_path)
    assert_one_line_error(refused, "already exists", "--force")
    failed = edgekit("build", f"{tiny_model_file}:factory", "--target", "rpi4", "--out", str(out), "--force",
                     "--calibration", str(wrong_calibration), cwd=tmp_path)
    assert_one_line_error(failed, "needs [1, 1, 8, 8]")
    assert (out / "manifest.json").read_text() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "out"]


def test_debug_shows_the_traceback(tmp_path):
    result = edgekit("build", "--target", "toaster", "--debug", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_targets_list_and_show(tmp_path):
    listing = edgekit("targets", cwd=tmp_path)
    assert listing.returncode == 0
    for name in ("rpi4", "arm64", "nnapi", "host"):
        assert name in listing.stdout
    shown = edgekit("targets", "show", "nnapi", cwd=tmp_path)
    assert shown.returncode == 0 and '"activation_type": "uint8"' in shown.stdout
    assert_one_line_error(edgekit("targets", "show", "toaster", cwd=tmp_path), "unknown target")
