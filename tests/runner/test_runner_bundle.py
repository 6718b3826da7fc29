"""End to end: the runner on a real bundle, as a user runs it on the device (fresh interpreters)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULT_KEYS = {"file", "format", "precision", "bytes", "runtime", "init_ms",
               "first_inference_ms", "warmup", "runs", "duration_s", "latency_ms",
               "throughput_per_s", "samples_ms", "memory_mb", "correctness", "emulated", "error"}
LATENCY_KEYS = {"mean", "std", "min", "p50", "p90", "p95", "p99", "max"}
MEMORY_KEYS = {"before_load_rss", "after_load_rss", "after_first_inference_rss", "peak_rss",
               "model_mb"}
CORRECTNESS_KEYS = {"max_abs_err", "cosine", "top1_agreement", "passed", "tolerance"}
DEVICE_KEYS = {"machine", "cpu_model", "cores", "python", "cpufreq_governor", "cpu_cur_freq_mhz",
               "soc_temp_c_before", "soc_temp_c_after", "throttled_before", "throttled_after"}


def test_every_artifact_runs_in_its_own_process_and_passes(bundle: Path, cli, fast, tmp_path,
                                                           manifest_of) -> None:
    out = tmp_path / "report.json"
    proc = cli(bundle, *fast, "--runs", "25", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    manifest = manifest_of(bundle)
    assert [r["file"] for r in report["results"]] == [a["file"] for a in manifest["artifacts"]]
    for res, art in zip(report["results"], manifest["artifacts"]):
        assert res["error"] is None and res["correctness"]["passed"], res
        assert res["bytes"] == art["bytes"] and res["format"] == art["format"]
        assert res["runs"] >= 25 and len(res["samples_ms"]) == res["runs"]
        lat, mem = res["latency_ms"], res["memory_mb"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert res["init_ms"] > 0 and res["first_inference_ms"] > 0
        assert res["throughput_per_s"] > 0 and res["duration_s"] >= 0.02
        assert 0 < mem["before_load_rss"] <= mem["after_load_rss"] <= mem["peak_rss"]
        assert mem["peak_rss"] >= mem["after_first_inference_rss"]
        assert res["runtime"]["threads"] == 2  # manifest runtime_defaults, not the LiteRT default 1
        # same numbers as the fixture's own independent implementation of the feed/read rules
        assert res["correctness"]["max_abs_err"] == pytest.approx(
            art["verification"]["max_abs_err"], rel=1e-3, abs=1e-6)
        assert res["correctness"]["top1_agreement"] == art["verification"]["top1_agreement"]
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(art["file"]))
        assert line.rstrip().endswith("PASS")
    by_file = {r["file"]: r["runtime"] for r in report["results"]}
    assert by_file["model_fp32.tflite"]["name"] == "ai-edge-litert"
    assert by_file["model_fp32.tflite"]["delegate"] == "xnnpack"
    assert by_file["model_fp32.ort"]["provider"] == "CPUExecutionProvider"


def test_json_report_has_every_documented_key(bundle: Path, cli, fast, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--artifact", "model_fp32.onnx", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"runner_version", "bundle", "target", "device", "results"} <= set(report)
    assert report["target"] == "host-test" and report["bundle"] == str(bundle.resolve())
    assert DEVICE_KEYS <= set(report["device"])
    assert report["device"]["cores"] >= 1 and report["device"]["cpu_model"]
    (res,) = report["results"]
    assert RESULT_KEYS <= set(res)
    assert {"name", "version", "provider", "threads"} <= set(res["runtime"])
    assert LATENCY_KEYS <= set(res["latency_ms"])
    assert MEMORY_KEYS <= set(res["memory_mb"])
    assert CORRECTNESS_KEYS <= set(res["correctness"])
    assert res["emulated"] is False


def test_int8_quantized_io_agrees_with_the_float_model(bundle: Path, cli, fast, tmp_path: Path) -> None:
    """int8 in, int8 out: quantize by the manifest's scale/zero_point, dequantize the logits."""
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--artifact", "model_int8.tflite", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    cor = json.loads(out.read_text())["results"][0]["correctness"]
    # measured on this bundle: 31/32 top-1 agreements (one digit near a decision boundary),
    # cosine 0.9999, max |err| ~0.25 on logits of magnitude ~10
    assert cor["top1_agreement"] >= 0.93
    assert cor["cosine"] >= 0.999
    assert 0.0 < cor["max_abs_err"] < 1.0  # really quantized, and not garbage
    assert cor["passed"]


@pytest.mark.parametrize("damage, expect", [
    ("flip", "sha256 does not match"),
    ("truncate", "truncated or replaced"),
    ("missing", "missing from the bundle"),
])
def test_damaged_artifact_is_refused_before_loading(bundle: Path, cli, fast, damage: str,
                                                    expect: str) -> None:
    path = bundle / "model_fp32.tflite"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    # the TFLite runtimes are made unimportable: had the runner tried to load the file, the
    # message would be "no TFLite runtime found" instead of the integrity one
    proc = cli(bundle, *fast, "--artifact", "model_fp32.tflite",
               block=["ai_edge_litert", "tflite_runtime", "tensorflow"])
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model_fp32.tflite" in lines[0] and expect in lines[0]
    assert "rebuild or re-copy the bundle" in lines[0]
    assert "ERROR" in proc.stdout


def test_damaged_artifact_does_not_stop_the_others(bundle: Path, cli, fast, tmp_path: Path) -> None:
    path = bundle / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--json", str(out))
    assert proc.returncode == 3
    results = {r["file"]: r for r in json.loads(out.read_text())["results"]}
    assert "sha256" in results["model_int8.tflite"]["error"]
    assert results["model_int8.tflite"]["latency_ms"] is None
    assert all(r["correctness"]["passed"] for f, r in results.items() if f != "model_int8.tflite")


@pytest.mark.parametrize("artifact, blocked, message", [
    ("model_fp32.tflite", ["ai_edge_litert", "tflite_runtime", "tensorflow"],
     "no TFLite runtime found: pip install ai-edge-litert "
     "(or tflite-runtime on Python 3.9-3.11 with numpy<2)"),
    ("model_fp32.ort", ["onnxruntime"], "no ONNX Runtime found: pip install onnxruntime"),
])
def test_missing_runtime_is_one_line_naming_the_package(bundle: Path, cli, fast, artifact: str,
                                                        blocked: list, message: str) -> None:
    proc = cli(bundle, *fast, "--artifact", artifact, block=blocked)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"edgekit-runner: {message}"]


def test_missing_tflite_runtime_in_bundle_mode_still_runs_onnx(bundle: Path, cli, fast,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--json", str(out),
               block=["ai_edge_litert", "tflite_runtime", "tensorflow"])
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    # one line per TFLite artifact, relayed from its subprocess
    assert proc.stderr.count("pip install ai-edge-litert") == 2
    results = {r["file"]: r for r in json.loads(out.read_text())["results"]}
    assert results["model_fp32.onnx"]["correctness"]["passed"]
    assert "no TFLite runtime found" in results["model_int8.tflite"]["error"]


def test_runs_without_torch_edgekit_or_tensorflow(bundle: Path, cli, fast) -> None:
    proc = cli(bundle, *fast, block=["torch", "edgekit", "tensorflow", "onnx", "onnx2tf"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("PASS") == 4


def test_module_import_loads_no_runtime(bundle: Path, tmp_path: Path) -> None:
    """Importing the runner pulls in numpy and the standard library only; runtimes are lazy."""
    import subprocess
    import sys

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import edgekit_runner; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True,
                         text=True, cwd=str(tmp_path), check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"torch", "edgekit", "tensorflow", "onnxruntime", "ai_edge_litert",
                         "tflite_runtime", "onnx"}


def test_tolerance_failure_exits_nonzero(bundle: Path, cli, fast, tmp_path: Path, manifest_of) -> None:
    manifest = manifest_of(bundle)
    art = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    art["tolerance"] = {"max_abs_err": 1e-6, "min_cosine": None}  # int8 cannot meet this
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--artifact", "model_int8.tflite", "--json", str(out))
    assert proc.returncode == 1
    cor = json.loads(out.read_text())["results"][0]["correctness"]
    assert cor["passed"] is False and cor["tolerance"]["max_abs_err"] == 1e-6
    assert proc.stdout.rstrip().endswith("FAIL")


def test_unavailable_delegate_and_provider_are_clear_errors(bundle: Path, cli, fast) -> None:
    proc = cli(bundle, *fast, "--artifact", "model_fp32.tflite", "--delegate", "gpu")
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert "delegate 'gpu' is not available" in proc.stderr
    proc = cli(bundle, *fast, "--artifact", "model_fp32.onnx", "--provider", "NoSuchProvider")
    assert proc.returncode == 4
    assert "provider NoSuchProvider is not available" in proc.stderr


def test_delegate_none_threads_and_emulated_flag(bundle: Path, cli, fast, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--artifact", "model_int8.tflite", "--delegate", "none",
               "--threads", "1", "--json", str(out), env={"EDGEKIT_EMULATED": "1"})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())["results"][0]
    assert res["runtime"]["delegate"] == "none" and res["runtime"]["threads"] == 1
    assert res["emulated"] is True and res["correctness"]["passed"]


def test_bad_bundle_and_unknown_artifact(bundle: Path, cli, fast, tmp_path: Path) -> None:
    proc = cli(bundle, "--artifact", "nope.tflite")
    assert proc.returncode == 2 and "nope.tflite is not an artifact" in proc.stderr
    (bundle / "manifest.json").unlink()
    proc = cli(bundle)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "manifest.json" in proc.stderr


def test_falls_back_to_tensorflow_lite(bundle: Path, cli, fast, tmp_path: Path) -> None:
    """Lookup order: ai_edge_litert, tflite_runtime, then tensorflow.lite (~9 s: TF import)."""
    out = tmp_path / "r.json"
    proc = cli(bundle, *fast, "--artifact", "model_int8.tflite", "--json", str(out),
               block=["ai_edge_litert", "tflite_runtime"])
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())["results"][0]
    assert res["runtime"]["name"] == "tensorflow" and res["runtime"]["threads"] == 2
    assert res["correctness"]["top1_agreement"] >= 0.93
