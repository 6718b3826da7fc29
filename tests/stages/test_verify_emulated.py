"""ARM-kernel verification in the build: `edgekit build --verify-on aarch64` runs the bundle's
runner under qemu-aarch64 -cpu cortex-a72 and records ``verdicts["arm_emulated"]`` per artifact.

The emulated tests use the default emulation cache (prepared once, as in tests/device/test_emulate.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, edgekit

from edgekit.device.emulate import prepare, prepared
from edgekit.stages.verify_emulated import VERDICT

from tiny_models import ort_outputs

FP32_VS_HOST = 1e-5  # fp32 kernels differ across ISAs only in summation order
INT8_TFLITE_VS_HOST = 1e-6  # same LiteRT version: integer kernels are bit-exact across ISAs
# The ORT QDQ graph with its Q/DQ nodes run as float (BASIC optimizations) is the artifact's
# semantics on every host; ARM's integer kernels land on it (here: to the last bit). An x86 host
# without VNNI is 0.26 away on the digits model (0.606 vs 0.345), far outside this bound.
ORT_VS_QDQ = 0.02


@pytest.fixture(scope="module")
def userland():
    return prepare(runtime=["litert", "onnxruntime"], progress=print)


@pytest.fixture(scope="module")
def digits(userland, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README example (digits CNN) built for rpi4 through the CLI with --verify-on aarch64."""
    out = tmp_path_factory.mktemp("digits") / "rpi4"
    result = edgekit("build", "--target", "rpi4", "--verify-on", "aarch64", "--out", str(out), "--latency-runs", "0",
                     cwd=out.parent)
    return out, result


def manifest_on_disk(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def arm_verdicts(manifest: dict) -> dict[str, dict]:
    return {a["file"]: a["verdicts"][VERDICT] for a in manifest["artifacts"] if VERDICT in (a.get("verdicts") or {})}


def qdq_semantics_err(out: Path, manifest: dict, file: str) -> float:
    """max abs err of an ORT artifact on golden.npz by the reference semantics (Q/DQ as float), on
    this host, through the file the build judges it by (the runner's ``reference_file``: an
    ``.ort`` holds ORT's fused int8 nodes, which an AVX2-only host runs with int16 saturation)."""
    from edgekit.runner.edgekit_runner import find_artifact, reference_file

    source = reference_file(manifest, find_artifact(manifest, file))
    golden = np.load(out / "golden.npz", allow_pickle=False)
    got = ort_outputs(out / source, {"input": golden["input"]}, reference=True)
    return float(np.abs(got.astype(np.float64) - golden["logits"]).max())


@pytest.mark.emulated
def test_digits_arm_verdicts(digits) -> None:
    out, result = digits
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    manifest = manifest_on_disk(out)
    verdicts = arm_verdicts(manifest)
    assert set(verdicts) == {"model_fp32.tflite", "model_int8.tflite", "model_int8.onnx", "model_int8.ort"}
    for art in manifest["artifacts"]:
        verdict = verdicts[art["file"]]
        assert verdict["passed"] is True and "error" not in verdict
        assert verdict["semantics"] == "arm-kernels" and verdict["machine"] == "aarch64"
        assert verdict["emulator"].startswith("qemu-aarch64 10.") and verdict["emulator"].endswith(" -cpu cortex-a72")
        assert verdict["userland"].startswith("debian bookworm arm64, python 3.11")
        assert verdict["samples"] == manifest["golden"]["samples"] == 32
        assert verdict["runtime"]["name"] == ("ai-edge-litert" if art["format"] == "tflite" else "onnxruntime")
        assert verdict["max_abs_err"] <= art["tolerance"]["max_abs_err"]
        assert verdict["cosine"] >= art["tolerance"]["min_cosine"] and verdict["top1_agreement"] == 1.0
        assert f"{art['file']}: ARM kernels (" in result.stderr  # one progress line per artifact


@pytest.mark.emulated
def test_digits_arm_figures(digits) -> None:
    """The figures: TFLite as on the host (bit-exact int8), ORT on the QDQ semantics."""
    out, _ = digits
    manifest = manifest_on_disk(out)
    verdicts, host = arm_verdicts(manifest), {a["file"]: a["verification"] for a in manifest["artifacts"]}
    assert verdicts["model_fp32.tflite"]["max_abs_err"] == pytest.approx(host["model_fp32.tflite"]["max_abs_err"], abs=FP32_VS_HOST)
    assert verdicts["model_int8.tflite"]["max_abs_err"] == pytest.approx(host["model_int8.tflite"]["max_abs_err"], abs=INT8_TFLITE_VS_HOST)
    for file in ("model_int8.onnx", "model_int8.ort"):
        assert verdicts[file]["max_abs_err"] == pytest.approx(qdq_semantics_err(out, manifest, file), abs=ORT_VS_QDQ)
        assert verdicts[file]["cosine"] > 0.999
    # the measured digits figures (GUIDE.md section 2: 0.345 / cosine 0.9998 on ARM semantics)
    for file in ("model_int8.tflite", "model_int8.onnx", "model_int8.ort"):
        assert 0.30 < verdicts[file]["max_abs_err"] < 0.40, (file, verdicts[file])


@pytest.mark.emulated
def test_automatic_when_cached_and_none_disables(userland, tmp_path, tiny_model_file) -> None:
    """No option + aarch64 target + cached userland: verdicts; --verify-on none: none, no stage."""
    auto = edgekit("build", f"{tiny_model_file}:factory", "--target", "arm64", "--out", str(tmp_path / "auto"),
                   "--latency-runs", "0", cwd=tmp_path)
    assert auto.returncode == 0, auto.stderr[-3000:]
    verdicts = arm_verdicts(manifest_on_disk(tmp_path / "auto"))
    assert verdicts and all(v["passed"] for v in verdicts.values()), verdicts
    assert set(verdicts) == {a["file"] for a in manifest_on_disk(tmp_path / "auto")["artifacts"]}
    off = edgekit("build", f"{tiny_model_file}:factory", "--target", "arm64", "--verify-on", "none",
                  "--out", str(tmp_path / "off"), "--latency-runs", "0", cwd=tmp_path)
    assert off.returncode == 0, off.stderr[-3000:]
    assert arm_verdicts(manifest_on_disk(tmp_path / "off")) == {}
    assert "ARM kernels" not in off.stderr and "emulated" not in off.stderr


def test_not_cached_means_not_run_and_nothing_built(tmp_path, tiny_model_file) -> None:
    """Automatic mode never prepares a userland: an empty cache stays empty and the build passes."""
    cache = tmp_path / "cache"
    env = {**os.environ, "EDGEKIT_EMULATE_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-m", "edgekit", "build", f"{tiny_model_file}:factory", "--target", "rpi4",
                             "--out", str(tmp_path / "out"), "--latency-runs", "0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert arm_verdicts(manifest_on_disk(tmp_path / "out")) == {}
    assert not cache.exists()
    assert "emulated" not in result.stderr


def test_wrong_architecture_is_refused_before_work(tmp_path, tiny_model_file) -> None:
    result = edgekit("build", f"{tiny_model_file}:factory", "--target", "host", "--verify-on", "aarch64",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "--verify-on aarch64: target host is ", ", not aarch64", "edgekit targets")
    assert "loading the model" not in result.stderr  # refused before any work
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_unknown_architecture_is_refused_by_the_api(tmp_path) -> None:
    """The CLI offers only aarch64|none; the API names what it can emulate, before any work."""
    from edgekit import BuildOptions, build
    from edgekit.errors import EmulationError

    with pytest.raises(EmulationError, match=r"cannot emulate 'riscv64' \(supported: aarch64\)") as error:
        build(BuildOptions(target="rpi4", out=tmp_path / "out", verify_on="riscv64"))
    assert error.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_prepared_reads_markers_only(tmp_path) -> None:
    """prepared() is None for an empty or a stale cache, and creates nothing."""
    assert prepared(cache_dir=tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    stale = tmp_path / "stale" / "steps"
    stale.mkdir(parents=True)
    (stale / "qemu.json").write_text(json.dumps({"key": {"suite": "bookworm", "binary": "qemu-aarch64"}, "info": {"version": "7.2"}}))
    assert prepared(cache_dir=tmp_path / "stale") is None


@pytest.mark.emulated
def test_prepared_is_what_prepare_returns(userland) -> None:
    assert prepared(runtime=["litert", "onnxruntime"]) == userland


@pytest.mark.emulated
def test_device_only_delegate_and_provider_are_replaced(userland, tmp_path, build_bundle, tiny_model_file) -> None:
    """nnapi: the NNAPI delegate and execution provider exist only on the phone, so the verdict
    is the ARM CPU kernels' (XNNPACK, CPUExecutionProvider) and says so."""
    out = tmp_path / "nnapi"
    build_bundle(out, "nnapi", f"{tiny_model_file}:factory", latency_runs=0, verify_on="aarch64")
    manifest = manifest_on_disk(out)
    assert manifest["runtime_defaults"]["tflite"]["delegate"] == "nnapi"
    verdicts = arm_verdicts(manifest)
    assert set(verdicts) == {a["file"] for a in manifest["artifacts"]}
    for art in manifest["artifacts"]:
        verdict = verdicts[art["file"]]
        assert verdict["passed"] and verdict["max_abs_err"] <= art["tolerance"]["max_abs_err"]
        if art["format"] == "tflite":
            assert verdict["runtime"]["delegate"] == "xnnpack" and "nnapi delegate is device-only" in verdict["note"]
        else:
            assert verdict["runtime"]["providers"] == ["CPUExecutionProvider"]
            assert "NnapiExecutionProvider is device-only" in verdict["note"]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # 500 MB of rootfs: hard links cost nothing on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


def userland_without(userland, dest: Path, flavour: str) -> Path:
    """A copy of the cached userland whose rootfs lacks ``flavour``'s wheels while its markers
    still say prepared: what a damaged cache (or a runtime that will not load) looks like.
    Real folders, not symlinks: qemu's -L would hand the guest the links' host targets."""
    shutil.copytree(userland.cache_dir / "steps", dest / "steps")
    shutil.copytree(userland.cache_dir / "qemu", dest / "qemu", copy_function=_link_or_copy)
    shutil.copytree(userland.rootfs, dest / "rootfs", symlinks=True, copy_function=_link_or_copy,
                    ignore=lambda folder, names: [f"site-{flavour}"] if folder.endswith("/opt/edgekit") else [])
    return dest


@pytest.mark.emulated
def test_failed_arm_verdict_fails_the_build(userland, tmp_path, tiny_model_file) -> None:
    """The ORT artifacts cannot run under emulation (onnxruntime missing from the guest): the
    automatic ARM verification fails the build with exit 4, one line naming both, no bundle."""
    cache = userland_without(userland, tmp_path / "cache", "onnxruntime")
    assert prepared(cache_dir=cache, runtime=["litert", "onnxruntime"]) is not None  # the markers still say ready
    env = {**os.environ, "EDGEKIT_EMULATE_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-m", "edgekit", "build", f"{tiny_model_file}:factory", "--target", "rpi4",
                             "--out", str(tmp_path / "out"), "--latency-runs", "0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 4, result.stderr[-3000:]
    assert_one_line_error(result, "ARM-kernel verification failed (qemu -cpu cortex-a72)", "model_int8.onnx: emulated runner failed",
                          "model_int8.ort: emulated runner failed", "--verify-on none skips it")
    assert "model_int8.tflite: ARM kernels (ai-edge-litert 2.3.0)" in result.stderr and ": PASS" in result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the staged bundle is gone too
