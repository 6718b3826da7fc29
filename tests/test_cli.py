"""Bad input gets one clear line, a non-zero exit, no traceback, and no half-written output."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def edgekit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})


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


def test_a_broken_profile_does_not_hide_the_others(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parents[1] / "targets", data / "targets")
    rpi4 = (data / "targets" / "rpi4.toml").read_text()
    typo = rpi4.replace('name = "rpi4"', 'name = "pi-typo"').replace("threads = 4", 'threads = "four"')
    (data / "targets" / "pi-typo.toml").write_text(typo)
    (data / "targets" / "garbled.toml").write_text("name = [[[")
    before = sorted(p.name for p in (data / "targets").iterdir())
    result = edgekit("targets", cwd=tmp_path, env={"EDGEKIT_DATA_DIR": str(data)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert listed == ["arm64", "host", "nnapi", "rpi4"], result.stdout
    assert result.stderr.splitlines() == [
        f"edgekit: error: target file {data / 'targets' / 'garbled.toml'} is not valid TOML: "
        "Invalid value (at end of document) (fix the TOML syntax)",
        f"edgekit: error: {data / 'targets' / 'pi-typo.toml'}: tflite.threads must be an integer, got 'four' "
        "(fix the value in the profile; 1 more problem(s) after this one)"]
    assert sorted(p.name for p in (data / "targets").iterdir()) == before  # nothing written or removed
    shown = edgekit("targets", "show", "rpi4", cwd=tmp_path, env={"EDGEKIT_DATA_DIR": str(data)})
    assert shown.returncode == 0 and '"arch": "aarch64"' in shown.stdout and '"budget": {' in shown.stdout


# profile edits refused when the profile is loaded, before the model is even imported
BAD_PROFILE_BUILDS = {
    "threads a word": (("threads = 4", 'threads = "four"'), "tflite.threads must be an integer, got 'four'"),
    "precisions a string": (('precisions = ["fp32", "int8"]', 'precisions = "fp32"'), "tflite.precisions must be a list, got 'fp32'"),
    "min_cosine a word": (("min_cosine = 0.99\n", 'min_cosine = "high"\n'), "tolerance.int8.min_cosine must be a number, got 'high'"),
    "device a string": (("[device]", 'device = "pi"\n[unused]'), "device must be a table, got 'pi'"),
    "negative tolerance": (("max_rel_err = 0.15", "max_rel_err = -1"), "tolerance.int8.max_rel_err must be >= 0.0, got -1"),
    "zero threads": (("threads = 4", "threads = 0"), "tflite.threads must be >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILE_BUILDS))
def test_bad_profile_is_refused_before_any_work(case, tmp_path):
    (old, new), message = BAD_PROFILE_BUILDS[case]
    profile = tmp_path / "board.toml"
    profile.write_text((Path(__file__).resolve().parents[1] / "targets" / "rpi4.toml").read_text().replace(old, new, 1))
    result = edgekit("build", "--target", str(profile), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, f"{profile}: {message}")
    assert result.stderr.startswith("edgekit: error:")  # refused before the first stage line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.toml"]


def _relu_onnx(path: Path, dims: list) -> Path:
    """A one-node ONNX graph (Relu) whose input ``x`` is float32 with ``dims`` (str: dynamic)."""
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


ONNX_INPUT_CASES = {  # (graph dims, --input, the one line, the hint)
    "dtype": ([1, 4], "x:1x4:int64", "--input x:1x4:int64 disagrees with {onnx}: its input 'x' is 1x4:float32",
              "(pass --input x:1x4:float32)"),
    "static dim": ([1, 4], "x:1x5", "--input x:1x5:float32 disagrees with {onnx}: its input 'x' is 1x4:float32",
                   "(pass --input x:1x4:float32)"),
    "rank": ([1, 4], "x:4", "its input 'x' is 1x4:float32", "(pass --input x:1x4:float32)"),
    "static dim beside a dynamic one": (["N", 4], "x:2x5", "--input x:2x5:float32 disagrees with {onnx}: its input 'x' is ?x4:float32",
                                        "(set only the dynamic (?) dimensions of ?x4, dtype float32)"),
    "dtype with a dynamic dim": (["N", 4], "x:2x4:int32", "its input 'x' is ?x4:float32", "(pass --input x:2x4:float32)"),
}


@pytest.mark.parametrize("case", sorted(ONNX_INPUT_CASES))
def test_input_that_disagrees_with_the_onnx_graph(case, tmp_path):
    dims, spec, line, hint = ONNX_INPUT_CASES[case]
    onnx_file = _relu_onnx(tmp_path / "relu.onnx", dims)
    result = edgekit("build", str(onnx_file), "--target", "host", "--input", spec, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, line.format(onnx=onnx_file), hint)
    assert "loading calibration data" not in result.stderr  # refused in the load stage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.onnx"]  # no bundle, no staging folder


def test_input_may_set_the_dynamic_dims_of_an_onnx_graph(tmp_path):
    import onnx

    from edgekit.stages.load import _onnx_override
    from edgekit.tensors import parse_input_spec

    graph_input = onnx.load(str(_relu_onnx(tmp_path / "relu.onnx", ["N", 4]))).graph.input[0]
    given = parse_input_spec("x:3x4")
    assert _onnx_override(graph_input, given, "relu.onnx") is given


def _nan_samples(folder: Path) -> None:
    data = np.random.default_rng(0).random((8, 1, 1, 8, 8)).astype(np.float32)
    data[5, 0, 0, 2, 2] = np.nan
    np.save(folder / "samples.npy", data)


class _Payload:
    """Unpickling this runs a shell command that leaves the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled(folder: Path) -> None:
    import pickle

    (folder / "samples.npy").write_bytes(pickle.dumps(_Payload(folder / "ran")))


CALIBRATION_CASES = {  # (how the folder is made, the one line)
    "NaN values": (_nan_samples, "calibration data samples.npy holds 1 NaN/Inf value(s)"),
    "a pickle": (_pickled, "calibration file samples.npy is not a .npy/.npz file (only unpickling could read it"),
    "strings": (lambda d: np.save(d / "samples.npy", np.full((8, 1, 1, 8, 8), "1")), "has dtype <U1, not numbers"),
    "not an image": (lambda d: (d / "x.jpg").write_text("hello"), "calibration file x.jpg is not a readable image"),
    "manifest missing keys": (lambda d: (d / "manifest.json").write_text('{"name": "mine"}'), "manifest.json: missing key 'file'"),
}


@pytest.mark.parametrize("case", sorted(CALIBRATION_CASES))
def test_bad_calibration_is_refused_before_any_conversion(case, tmp_path, tiny_model_file):
    make, message = CALIBRATION_CASES[case]
    folder = tmp_path / "calib"
    folder.mkdir()
    make(folder)
    before = sorted(p.name for p in folder.iterdir())
    result = edgekit("build", f"{tiny_model_file}:factory", "--target", "rpi4", "--calibration", str(folder),
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, message)
    assert "exporting" not in result.stderr and "converting" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]  # no bundle, no staging folder
    assert sorted(p.name for p in folder.iterdir()) == before  # the payload did not run


@pytest.mark.parametrize("how", ["flag", "recipe file"])
def test_prune_ratio_that_is_not_a_number(how, tmp_path, tiny_model_file):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[compress]]\nmethod = "prune"\nkind = "structured"\nratio = "half"\n')
    args = ["--prune", "structured:half"] if how == "flag" else ["--recipe", str(recipe)]
    result = edgekit("build", f"{tiny_model_file}:factory", "--target", "rpi4", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "prune: ratio='half' must be a number, e.g. ratio=0.5")
    assert result.stderr.startswith("edgekit: error:")  # before the first stage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


def test_bench_out_into_a_folder_that_does_not_exist_yet(tmp_path):
    shutil.copytree(Path(__file__).resolve().parent / "runner_standalone" / "example_rpi4", tmp_path / "bundle")
    result = edgekit("bench", "bundle", "--artifact", "model_fp32.tflite", "--runs", "3", "--warmup", "0",
                     "--min-seconds", "0", "--out", "r/x.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reports = json.loads((tmp_path / "r" / "x.json").read_text())
    assert [(r["host"], [a["file"] for a in r["results"]]) for r in reports] == [("local", ["model_fp32.tflite"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "r"]
