"""edgekit.device.emulate: a real rpi4 bundle run by the aarch64 runtimes under qemu user-mode emulation.

The first run prepares the emulation cache (~80 s and ~200 MB of downloads here: needs root,
debootstrap and network access to a Debian mirror and PyPI); later runs reuse it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from edgekit.device.bench import bench
from edgekit.device.emulate import FLAVOURS, EmulationEnv, default_cache_dir, plan_runs, prepare, run
from edgekit.device.settings import EMULATED, RunnerSettings
from edgekit.device.userland import TOOL_PACKAGES
from edgekit.errors import EmulationError

pytestmark = pytest.mark.emulated

FP32_VS_HOST = 1e-5  # fp32 kernels differ across ISAs only in summation order
INT8_VS_HOST = 1e-6  # same runtime version: integer kernels are bit-exact across ISAs


@pytest.fixture(scope="module")
def env(require_tool, require_setup) -> EmulationEnv:
    """The default cache, so a second test session reuses the first one's downloads."""
    if not (default_cache_dir() / "rootfs").is_dir():  # moved into place only once complete
        for tool in ("debootstrap", "wget", "dpkg-deb", "tar"):  # what build_rootfs runs
            require_tool(tool, TOOL_PACKAGES[tool])
        if os.geteuid() != 0:
            require_setup("the emulated arm64 userland is built once as root (debootstrap): "
                          "sudo .venv/bin/python -m pytest tests/device/test_emulate.py")
    return prepare(runtime="all", progress=print)


@pytest.fixture(scope="module")
def bundle(tiny_rpi4_bundle) -> Path:
    return tiny_rpi4_bundle


@pytest.fixture(scope="module")
def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def host_artifact(manifest: dict, file: str) -> dict:
    return next(a for a in manifest["artifacts"] if a["file"] == file)


def check_report(report: dict, bundle: Path, flavour: str, files: set[str]) -> dict[str, dict]:
    """What every emulated report must say; returns the results by artifact file."""
    assert report["bundle"] == str(bundle.resolve())  # the guest read the host's bundle path
    assert report["device"]["machine"] == "aarch64"
    assert report["exit_code"] == 0
    emulation = report["emulation"]
    assert emulation["cpu"] == "cortex-a72" and emulation["rootfs"] == "debian bookworm arm64"
    assert emulation["qemu"].startswith("10.") and emulation["python"].startswith("3.11")
    assert emulation["runtime_flavour"] == flavour
    results = {r["file"]: r for r in report["results"]}
    assert set(results) == files
    for result in results.values():
        assert result["error"] is None, result["error"]
        assert result["emulated"] is True
        assert result["correctness"]["passed"], result["correctness"]
    return results


def test_smoke_imports(env: EmulationEnv, tmp_path: Path) -> None:
    """Every flavour's numpy and runtime import in the aarch64 python."""
    for flavour, spec in FLAVOURS.items():
        code = f"import platform, numpy, {spec.module}; print(platform.machine(), numpy.__version__)"
        proc = subprocess.run(env.command(["-c", code]), env=env.environ(flavour, tmp_path), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        machine, numpy_version = proc.stdout.split()[-2:]
        assert machine == "aarch64"
        assert numpy_version.startswith("1." if flavour == "tflite-runtime" else "2.")


def test_prepare_again_is_cached_and_silent(env: EmulationEnv) -> None:
    messages: list[str] = []
    again = prepare(runtime="all", progress=messages.append)
    assert messages == []
    assert again == env


def test_tflite_with_litert(env: EmulationEnv, bundle: Path, manifest: dict) -> None:
    """ai-edge-litert 2.3 aarch64, the host's runtime: int8 bit-exact, fp32 within 1e-5."""
    report = run(bundle, env=env, runtime="litert")
    results = check_report(report, bundle, "litert", {"model_fp32.tflite", "model_int8.tflite"})
    for file, result in results.items():
        assert result["runtime"]["name"] == "ai-edge-litert"
        host = host_artifact(manifest, file)["verification"]["max_abs_err"]
        limit = INT8_VS_HOST if "int8" in file else FP32_VS_HOST
        assert result["correctness"]["max_abs_err"] == pytest.approx(host, abs=limit)


def test_tflite_with_tflite_runtime(env: EmulationEnv, bundle: Path, manifest: dict) -> None:
    """tflite-runtime 2.14 with numpy<2 (Raspberry Pi OS bookworm). Its int8 kernels round some
    outputs one step differently from ai-edge-litert 2.3 (max_abs_err 1.48e-3 vs 1.65e-3 on the
    host's verification, the same on x86 with tflite-runtime 2.14: the version, not the ISA),
    so int8 is held to one output quantization step of the host's figure."""
    report = run(bundle, env=env, runtime="tflite-runtime")
    results = check_report(report, bundle, "tflite-runtime", {"model_fp32.tflite", "model_int8.tflite"})
    for file, result in results.items():
        assert result["runtime"]["name"] == "tflite-runtime" and result["runtime"]["version"] == "2.14.0"
        art = host_artifact(manifest, file)
        quant = art["outputs"][0]["quantization"]
        limit = quant["scale"] if quant else FP32_VS_HOST
        assert result["correctness"]["max_abs_err"] == pytest.approx(art["verification"]["max_abs_err"], abs=limit)


def test_onnx_and_ort_with_onnxruntime(env: EmulationEnv, bundle: Path, manifest: dict) -> None:
    """onnxruntime 1.32 aarch64 (MLAS ARM kernels): same int8 outputs as on the x86 host."""
    report = run(bundle, env=env, runtime="onnxruntime")
    results = check_report(report, bundle, "onnxruntime", {"model_int8.onnx", "model_int8.ort"})
    for file, result in results.items():
        assert result["runtime"]["name"] == "onnxruntime"
        assert result["runtime"]["provider"] == "CPUExecutionProvider"
        host = host_artifact(manifest, file)["verification"]["max_abs_err"]
        assert result["correctness"]["max_abs_err"] == pytest.approx(host, abs=INT8_VS_HOST)


def test_default_flavour_per_artifact(manifest: dict) -> None:
    plan = {art["file"]: flavour for art, flavour in plan_runs(manifest)}
    assert plan == {"model_fp32.tflite": "litert", "model_int8.tflite": "litert",
                    "model_int8.onnx": "onnxruntime", "model_int8.ort": "onnxruntime"}
    assert [a["file"] for a, _ in plan_runs(manifest, "tflite-runtime")] == ["model_fp32.tflite", "model_int8.tflite"]
    with pytest.raises(EmulationError, match="not an artifact"):
        plan_runs(manifest, artifact="nope.tflite")
    with pytest.raises(EmulationError, match="unknown emulated runtime"):
        plan_runs(manifest, "tensorflow")


def test_one_artifact_with_runner_settings(env: EmulationEnv, bundle: Path) -> None:
    """settings.artifact picks the artifact and its default flavour; the other settings reach the runner."""
    report = run(bundle, EMULATED.replace(artifact="model_int8.ort", runs=2, threads=1), env=env)
    (result,) = check_report(report, bundle, "onnxruntime", {"model_int8.ort"}).values()
    assert result["runs"] == 2 and result["runtime"]["threads"] == 1


def test_bench_owns_emulation(env: EmulationEnv, bundle: Path) -> None:
    """bench(emulate=...) prepares (cached: silent), runs few timed runs unless told, and judges
    the report with the same rule as a local or SSH run."""
    lines: list[str] = []
    (report,) = bench(bundle, RunnerSettings(artifact="model_int8.tflite", threads=2), emulate="aarch64", progress=lines.append)
    (result,) = check_report(report, bundle, "litert", {"model_int8.tflite"}).values()
    assert report["host"] == "emulated-aarch64" and report["exit_code"] == 0 and report["passed"] is True
    assert result["runs"] == EMULATED.runs == 3 and result["runtime"]["threads"] == 2
    assert lines and all("timings are not meaningful" in line for line in lines)


def test_failed_emulator_becomes_an_error_result(env: EmulationEnv, bundle: Path) -> None:
    """A crash (here: an 'emulator' that exits 1 silently) is reported per artifact, not raised."""
    broken = dataclasses.replace(env, qemu=Path("/bin/false"))
    report = run(bundle, EMULATED.replace(artifact="model_int8.tflite"), env=broken)
    (result,) = report["results"]
    assert report["exit_code"] == 1 and report["device"] is None
    assert result["emulated"] is True and result["correctness"] is None
    assert "emulated runner failed (exit 1)" in result["error"]
