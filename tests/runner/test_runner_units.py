"""The runner's pieces in-process: conversions, stopping rule, statistics, verdicts, portability."""
from __future__ import annotations

import ast
import glob
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgekit.runner import RUNNER_PATH as RUNNER


def test_feed_and_read_follow_the_bundle_rules(er: ModuleType) -> None:
    x = np.linspace(-0.1, 1.1, 2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)  # NCHW
    entry = {"dtype": "int8", "perm": [0, 2, 3, 1],
             "quantization": {"scale": 1 / 255, "zero_point": -128}}
    q = er.to_artifact(x, entry)
    assert q.dtype == np.int8 and q.shape == (1, 3, 4, 2) and q.flags["C_CONTIGUOUS"]
    assert q.min() == -128 and q.max() == 127  # out-of-range values clipped, not wrapped
    back = er.from_artifact(q, entry)
    assert back.shape == x.shape
    inside = (x >= 0) & (x <= 1)
    assert np.abs(back - x)[inside].max() <= 0.5 / 255 + 1e-7  # half a quantization step
    ids = np.array([[3, 7]], dtype=np.int64)  # token ids: integer, no quantization
    assert er.to_artifact(ids, {"dtype": "int32", "perm": None, "quantization": None}).dtype \
        == np.int32


def test_timed_loop_needs_both_runs_and_min_seconds_and_stops_at_max(er: ModuleType) -> None:
    samples, wall = er.timed_loop(lambda: None, runs=5, min_s=0.05, max_s=10)
    assert len(samples) > 5 and wall >= 0.05  # min time dominates for a fast call
    samples, wall = er.timed_loop(lambda: time.sleep(0.01), runs=8, min_s=0.0, max_s=10)
    assert len(samples) == 8 and all(s >= 9.0 for s in samples)  # count dominates, in ms
    samples, wall = er.timed_loop(lambda: time.sleep(0.01), runs=10**9, min_s=0, max_s=0.1)
    assert 0.1 <= wall < 0.5 and len(samples) < 20  # capped


def test_latency_stats(er: ModuleType) -> None:
    stats = er.latency_stats([float(v) for v in range(1, 101)])
    assert stats["min"] == 1 and stats["max"] == 100 and stats["mean"] == 50.5
    assert stats["p50"] == 50.5 and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and stats["std"] == pytest.approx(28.8661, 1e-4)


def test_compare_and_judge(er: ModuleType) -> None:
    ref = np.array([[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]])  # [N=2, 1, 3]
    got = ref + np.array([[[0.0, 0.9, 0.0]], [[0.0, 0.0, 0.1]]])  # sample 0 keeps argmax
    m = er.compare({"y": got}, {"y": ref}, classification=True)
    assert m["max_abs_err"] == pytest.approx(0.9) and m["top1_agreement"] == 1.0
    assert m["cosine"] == pytest.approx(5.0 / math.sqrt(5.0 * 5.82), 1e-6)
    assert er.compare({"y": got}, {"y": ref}, classification=False)["top1_agreement"] is None
    assert er.judge(m, {})  # no tolerance set: nothing to fail
    assert er.judge(m, {"max_abs_err": 1.0, "min_cosine": None, "min_top1_agreement": 1.0})
    assert not er.judge(m, {"max_abs_err": 0.5})
    assert not er.judge(m, {"min_cosine": 0.99})
    nan = dict(m, max_abs_err=float("nan"))
    assert not er.judge(nan, {})  # NaN outputs never pass


def test_integrity_check_in_process(er: ModuleType, bundle: Path, manifest_of) -> None:
    art = manifest_of(bundle)["artifacts"][0]
    assert er.check_artifact(bundle, art) == bundle / art["file"]
    with pytest.raises(er.RunnerError) as info:
        er.check_artifact(bundle, dict(art, sha256="0" * 64))
    assert info.value.code == er.EXIT_INTEGRITY and art["file"] in str(info.value)


def test_memory_and_device_probes(er: ModuleType) -> None:
    sampler = er.PeakSampler(interval_s=0.001).start()
    block = np.ones(8 << 20, dtype=np.uint8)  # 8 MB touched while sampling
    time.sleep(0.05)
    peak = sampler.stop()
    del block
    rss, maxrss = er.rss_mb(), er.maxrss_mb()
    assert rss and maxrss and maxrss >= rss * 0.9
    if Path("/proc/self/statm").exists():
        assert sampler.samples >= 1 and peak and peak <= maxrss + 0.5
    dev = er.device_info()
    assert dev["cores"] >= 1 and dev["python"] and dev["machine"]


def test_source_is_python39_compatible_and_self_contained() -> None:
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # no match, no new syntax
    top_imports = set()
    for node in tree.body:  # module level only: runtimes must be imported lazily
        if isinstance(node, ast.Import):
            top_imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_imports.add((node.module or "").split(".")[0])
    assert top_imports - {"__future__", "numpy"} <= set(__import__("sys").stdlib_module_names)
    assert "from __future__ import annotations" in source


def _other_interpreters() -> list:
    """Python 3.9, 3.10, 3.12, 3.13 on PATH or under pyenv (3.11 is the venv's)."""
    found = {shutil.which(f"python3.{minor}") for minor in (9, 10, 12, 13)} - {None}
    found = {p for p in found if "/shims/" not in p}  # pyenv shims: same as versions/ below
    for path in glob.glob(str(Path.home() / ".pyenv/versions/3.*/bin/python3")):
        if Path(path).parents[1].name.split(".")[1] in ("9", "10", "12", "13"):
            found.add(path)
    return sorted(found)


@pytest.mark.parametrize("python", _other_interpreters() or ["none"])
def test_compiles_under_other_pythons(python: str, tmp_path: Path) -> None:
    """py_compile with the real 3.9-3.13 interpreters where present (pyenv on the build hosts)."""
    if python == "none":
        pytest.skip("no other Python 3.9-3.13 interpreter on this machine")
    proc = subprocess.run([python, "-m", "py_compile", str(RUNNER)], capture_output=True,
                          text=True, env={"PYTHONPYCACHEPREFIX": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr


def test_main_is_usable_as_a_console_script(er: ModuleType, bundle: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.json"
    code = er.main([str(bundle), "--artifact", "model_fp32.onnx", "--runs", "5",
                    "--min-seconds", "0.01", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "model_fp32.onnx" in table and "PASS" in table
    text = out.read_text()
    assert '"samples_ms": [' in text  # number lists kept on one line each
    assert json.loads(text)["results"][0]["runs"] >= 5


def test_raspberry_pi_probes(er: ModuleType, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Pi OS cpuinfo has no "model name" on 64-bit kernels: "Model" names the board."""
    cpuinfo = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\n" \
              "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    monkeypatch.setattr(er, "read_text", lambda path: cpuinfo if path == "/proc/cpuinfo" else None)
    assert er.cpu_model() == "Raspberry Pi 4 Model B Rev 1.4"
    fake = tmp_path / "vcgencmd"
    fake.write_text("#!/bin/sh\necho throttled=0x50005\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert er.throttled() == "0x50005"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert er.throttled() is None


@pytest.mark.parametrize("args, line", [
    (["--threads", "0"], "edgekit-runner: error: --threads 0 must be >= 1 (see edgekit-runner --help)"),
    (["--threads", "four"], "edgekit-runner: error: argument --threads: invalid int value: 'four' (see edgekit-runner --help)"),
    (["--runs", "0"], "edgekit-runner: error: --runs 0 must be >= 1 (see edgekit-runner --help)"),
    (["--warmup", "-1"], "edgekit-runner: error: --warmup -1 must be >= 0 (see edgekit-runner --help)"),
    (["--min-seconds", "-0.5"], "edgekit-runner: error: --min-seconds -0.5 must be >= 0 (see edgekit-runner --help)"),
    (["--max-seconds", "nan"], "edgekit-runner: error: --max-seconds nan must be a finite number > 0 (see edgekit-runner --help)"),
    (["--max-seconds", "0"], "edgekit-runner: error: --max-seconds 0.0 must be > 0 (see edgekit-runner --help)"),
    (["--delegate", "tpu"], "edgekit-runner: error: argument --delegate: invalid choice: 'tpu'"),
])
def test_bad_numbers_are_one_line_and_exit_2(args: list[str], line: str, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r.json"
    proc = subprocess.run([sys.executable, str(RUNNER), str(tmp_path), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(line)
    assert "usage:" not in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # refused before anything was read or written


def test_json_into_a_folder_that_does_not_exist_yet(er: ModuleType, bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "r.json"
    code = er.main([str(bundle), "--artifact", "model_fp32.onnx", "--runs", "5", "--min-seconds", "0.01", "--quiet",
                    "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["results"][0]["file"] == "model_fp32.onnx"
