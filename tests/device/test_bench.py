"""edgekit bench: a real bundle run by its own runner, here and through a real sshd on loopback.

The sshd is started by the ``sshd`` fixture with throw-away host and client keys; the "device" is
this machine, so the tests can also check that the remote temporary folder is gone afterwards.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.device.bench import bench, parse_host, render_bench
from edgekit.device.settings import RunnerSettings
from edgekit.errors import BenchError

from loopback_sshd import Sshd, free_port, keygen

# Small measurement settings: the tests check the mechanics, not this host's speed.
FAST = RunnerSettings(runs=20, min_seconds=0.1, warmup=2)

@pytest.fixture(scope="module")
def bundle(tiny_rpi4_bundle) -> Path:
    return tiny_rpi4_bundle


@pytest.fixture(scope="module")
def manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def local(bundle) -> dict:
    (report,) = bench(bundle, FAST)
    return report


def assert_same_correctness(report: dict, reference: dict[str, dict]) -> None:
    """Every artifact's correctness equals the reference's (manifest verification or another run)."""
    assert {r["file"] for r in report["results"]} == set(reference)
    for r in report["results"]:
        ref, got = reference[r["file"]], r["correctness"]
        assert r["error"] is None, r["error"]
        assert got["passed"] is True
        assert abs(got["max_abs_err"] - ref["max_abs_err"]) <= 1e-6, r["file"]
        assert got["top1_agreement"] == ref["top1_agreement"], r["file"]


def remote_dirs(sshd: Sshd) -> set[str]:
    """The bench folders on the "device": under the sshd's own TMPDIR, so another test worker's
    runs cannot show up here."""
    return set(glob.glob(f"{sshd.tmpdir}/edgekit-bench.*"))


# ----------------------------------------------------------------------------- local
def test_local_bench_matches_manifest_verification(local, manifest):
    assert local["host"] == "local" and local["exit_code"] == 0 and local["passed"] is True
    assert_same_correctness(local, {a["file"]: a["verification"] for a in manifest["artifacts"]})
    for r in local["results"]:
        assert r["runs"] >= 20 and len(r["samples_ms"]) == r["runs"]
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["memory_mb"]["peak_rss"] > 10


def test_render_bench_one_row_per_artifact(local, manifest):
    lines = render_bench([local]).splitlines()
    assert lines[0].split()[:4] == ["host", "artifact", "runtime", "threads"]
    body = lines[2:]
    assert len(body) == len(manifest["artifacts"])
    assert all(line.startswith("local") and line.endswith("PASS") for line in body)
    assert "ai-edge-litert" in "\n".join(body) and "onnxruntime" in "\n".join(body)


def test_failed_correctness_is_kept_and_marked(bundle, tmp_path):
    """The runner exits 1 but writes JSON: bench keeps the report and marks it not passed."""
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    with np.load(broken / "golden.npz") as npz:
        golden = {k: npz[k] for k in npz.files}
    golden["logits"] = golden["logits"] + 1.0  # golden references off by one: every artifact "drifts"
    np.savez(broken / "golden.npz", **golden)
    manifest = json.loads((broken / "manifest.json").read_text())  # the runner checks golden.npz's sha256
    manifest["golden"]["sha256"] = hashlib.sha256((broken / "golden.npz").read_bytes()).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (report,) = bench(broken, FAST.replace(artifact="model_fp32.tflite"))
    assert report["exit_code"] == 1 and report["passed"] is False
    (r,) = report["results"]
    assert r["correctness"]["passed"] is False and r["correctness"]["max_abs_err"] >= 0.9
    assert render_bench([report]).splitlines()[2].endswith("FAIL")


@pytest.mark.parametrize("damage, message", [
    ("no_folder", "does not exist"),
    ("manifest.json", "has no manifest.json"),
    ("edgekit_runner.py", "has no edgekit_runner.py"),
])
def test_bad_bundle_is_refused_with_the_fix(bundle, tmp_path, damage, message):
    target = tmp_path / "missing"
    if damage != "no_folder":
        target = tmp_path / "bundle"
        shutil.copytree(bundle, target)
        (target / damage).unlink()
    with pytest.raises(BenchError, match=message) as info:
        bench(target)
    assert "edgekit build" in str(info.value)


def test_emulate_and_hosts_are_refused_together(bundle):
    """Emulation runs here: silently dropping the --host devices would report the wrong machine."""
    with pytest.raises(BenchError, match="--emulate runs here, not on --host devices"):
        bench(bundle, hosts=["pi@raspberrypi"], emulate="aarch64")


@pytest.mark.parametrize("spec, parsed", [
    ("pi@raspberrypi.local", ("pi", "raspberrypi.local", None)),
    ("root@127.0.0.1:2222", ("root", "127.0.0.1", 2222)),
    ("user@[::1]:22", ("user", "::1", 22)),
    ("board", (None, "board", None)),
])
def test_parse_host(spec, parsed):
    host = parse_host(spec)
    assert (host.user, host.name, host.port) == parsed


@pytest.mark.parametrize("spec", ["pi@", "a b", "pi@host:99999", "pi@host:port"])
def test_bad_host_is_refused(spec):
    with pytest.raises(BenchError, match="bad host"):
        parse_host(spec)


# sshd: tests/loopback_sshd.py (a real sshd on loopback), shared with the search tests


def remote(sshd: Sshd, hosts=None, **kwargs) -> list[dict]:
    """bench over the test sshd with this interpreter as the device's python (it has the runtimes)."""
    kwargs.setdefault("identity", sshd.identity)
    kwargs.setdefault("known_hosts", sshd.known_hosts)
    return bench(kwargs.pop("bundle"), kwargs.pop("settings", FAST), hosts=hosts or [sshd.host()], python=sys.executable, **kwargs)


def test_remote_bench_matches_local_and_cleans_up(sshd, bundle, local):
    (report,) = remote(sshd, bundle=bundle)
    assert report["host"] == sshd.host() and report["exit_code"] == 0 and report["passed"] is True
    assert_same_correctness(report, {r["file"]: r["correctness"] for r in local["results"]})
    assert report["remote_dir"].startswith(f"{sshd.tmpdir}/edgekit-bench.")
    assert not os.path.exists(report["remote_dir"])  # the "device" is this machine


def test_two_hosts_run_in_parallel_into_one_table(sshd, bundle, manifest):
    hosts = [sshd.host("127.0.0.1"), sshd.host("localhost")]
    reports = remote(sshd, hosts=hosts, bundle=bundle)
    assert [r["host"] for r in reports] == hosts
    assert all(r["passed"] for r in reports)
    assert len({r["remote_dir"] for r in reports}) == 2 and not any(os.path.exists(r["remote_dir"]) for r in reports)
    # in parallel: each run began before the other ended
    assert max(r["started_at"] for r in reports) < min(r["started_at"] + r["wall_s"] for r in reports)
    body = render_bench(reports).splitlines()[2:]
    assert len(body) == 2 * len(manifest["artifacts"])
    assert {line.split()[0] for line in body} == set(hosts)


def test_changed_host_key_is_refused(sshd, bundle, tmp_path):
    other = " ".join(Path(f"{keygen(tmp_path / 'other_key')}.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    before = remote_dirs(sshd)
    with pytest.raises(BenchError) as info:
        remote(sshd, bundle=bundle, known_hosts=known_hosts)
    message = str(info.value)
    assert message.startswith(f"{sshd.host()}: host key for [127.0.0.1]:{sshd.port} does NOT match")
    assert f"ssh-keygen -f {known_hosts} -R '[127.0.0.1]:{sshd.port}'" in message
    assert info.value.results == []
    assert remote_dirs(sshd) == before


def test_unknown_host_is_refused(sshd, bundle, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(BenchError, match=r"host key for \[127\.0\.0\.1\]:\d+ is not trusted") as info:
        remote(sshd, bundle=bundle, known_hosts=empty)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in str(info.value)


def test_unknown_client_key_is_refused(sshd, bundle, tmp_path):
    with pytest.raises(BenchError, match="key-based login as .* was refused") as info:
        remote(sshd, bundle=bundle, identity=keygen(tmp_path / "stranger"))
    assert f"ssh-copy-id -p {sshd.port} {sshd.user}@127.0.0.1" in str(info.value)


def test_missing_python_on_the_device(sshd, bundle):
    with pytest.raises(BenchError, match="/nonexistent/python3 not found on the device"):
        bench(bundle, hosts=[sshd.host()], identity=sshd.identity, known_hosts=sshd.known_hosts, python="/nonexistent/python3")


def test_runner_failure_names_the_host_and_still_cleans_up(sshd, bundle):
    before = remote_dirs(sshd)
    with pytest.raises(BenchError, match=rf"^{sshd.host()}: the runner failed with exit code 2 .*--runs"):
        remote(sshd, bundle=bundle, settings=RunnerSettings(runs=0))
    assert remote_dirs(sshd) == before


def test_one_failed_host_keeps_the_others(sshd, bundle):
    closed = f"{sshd.user}@127.0.0.1:{free_port()}"
    with pytest.raises(BenchError, match=rf"1 of 2 hosts failed: {closed}: cannot connect") as info:
        remote(sshd, hosts=[sshd.host(), closed], bundle=bundle, settings=FAST.replace(artifact="model_int8.tflite"))
    (kept,) = info.value.results
    assert kept["host"] == sshd.host() and kept["passed"] is True
