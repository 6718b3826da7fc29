"""edgekit doctor and --version: the installed stack against the lock, the CPU, the tests' tools.

The venv under test is the real one running these tests: it must match the committed lock.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from edgekit import __version__
from edgekit.doctor import TEST_TOOLS, find_tool, lock_path, read_lock
from edgekit.verify import hostinfo

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
SETUP_SYSTEM = REPO / "scripts" / "setup-system.sh"


def edgekit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)


def test_this_venv_matches_the_lock() -> None:
    result = edgekit("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    pins = read_lock(LOCK)
    assert f"lock: {LOCK}: all {len(pins)} packages match" in result.stdout.splitlines()
    assert len(pins) > 50 and pins["torch"] == ("torch", "2.13.0+cpu")  # the local CPU wheel, not CUDA


def test_checkout_finds_its_own_lock() -> None:
    assert lock_path() == LOCK


def test_changed_lock_names_each_difference_and_exits_1(tmp_path: Path) -> None:
    numpy_now = metadata.version("numpy")
    text = LOCK.read_text().replace(f"numpy=={numpy_now}\n", "numpy==0.0.1\n")
    assert "numpy==0.0.1" in text
    lock = tmp_path / "constraints.txt"
    lock.write_text(text + "edgekit-no-such-package==1.0\n")
    result = edgekit("doctor", "--lock", str(lock))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    total = len(read_lock(LOCK)) + 1
    assert f"lock: {lock}: 2 of {total} packages differ" in lines
    assert f"  numpy: {numpy_now} (lock 0.0.1)" in lines
    assert "  edgekit-no-such-package: not installed (lock 1.0)" in lines

    report = json.loads(edgekit("doctor", "--lock", str(lock), "--json").stdout)
    assert report["matches_lock"] is False
    assert report["lock"]["differs"] == [{"package": "edgekit-no-such-package", "lock": "1.0", "installed": None},
                                         {"package": "numpy", "lock": "0.0.1", "installed": numpy_now}]


def test_json_report_has_the_cpu_and_the_tools() -> None:
    result = edgekit("doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["edgekit"] == __version__ and report["prefix"] == sys.prefix
    assert report["lock"] == {"path": str(LOCK), "packages": len(read_lock(LOCK)), "differs": []}
    cpu = report["cpu"]
    assert (cpu["arch"], cpu["int8_isa"]) == (hostinfo.arch(), hostinfo.int8_isa())
    assert cpu["vnni"] == hostinfo.has_any(hostinfo.VNNI_FEATURES)
    assert cpu["note"].startswith("VNNI:" if cpu["vnni"] else "no VNNI:") or cpu["arch"] != "x86_64"
    assert report["tools"] == {name: {"package": pkg, "path": find_tool(name)} for name, pkg in TEST_TOOLS.items()}


@pytest.mark.parametrize("content, problem", [
    ("numpy>=1.26\n", "{lock}:1 is not NAME==VERSION: 'numpy>=1.26'"),
    ("# only a comment\n", "the lock {lock} pins no package"),
])
def test_bad_lock_is_one_line_and_exit_2(tmp_path: Path, content: str, problem: str) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text(content)
    result = edgekit("doctor", "--lock", str(lock))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines() == [f"edgekit: error: {problem.format(lock=lock)} (regenerate it with scripts/lock.sh)"]


def test_missing_lock_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = edgekit("doctor", "--lock", str(tmp_path / "nope.txt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"edgekit: error: cannot read the lock {tmp_path / 'nope.txt'}: ")


def test_version_reports_edgekit_and_the_stack() -> None:
    result = edgekit("--version")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"edgekit {__version__}"
    assert lines[1] == f"python {sys.version.split()[0]}"
    stack = dict(line.split(" ", 1) for line in lines[2:])
    assert list(stack) == list(hostinfo.STACK_PACKAGES)
    assert stack["torch"] == metadata.version("torch") == "2.13.0+cpu"
    assert stack["onnxruntime"] == metadata.version("onnxruntime")


# ----------------------------------------------------------------------------- system tools
def test_setup_script_installs_the_tools_doctor_lists() -> None:
    (line,) = [ln for ln in SETUP_SYSTEM.read_text().splitlines() if ln.startswith("TOOLS=")]
    pairs = dict(pair.split(":") for pair in line.split("=", 1)[1].strip('"').split())
    assert pairs == TEST_TOOLS


def test_setup_script_without_apt_installs_nothing_says_why_and_fails_only_in_ci(tmp_path: Path) -> None:
    """A PATH without apt-get (and without most tools) is the "not Debian" case, for real."""
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(["/bin/bash", str(SETUP_SYSTEM)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    # tools that are in sbin are still found (a non-root PATH often lacks sbin); the rest are missing
    in_sbin = {tool for tool in TEST_TOOLS if any(os.access(f"{d}/{tool}", os.X_OK) for d in ("/usr/sbin", "/sbin"))}
    missing = sorted({pkg for tool, pkg in TEST_TOOLS.items() if tool not in in_sbin})
    assert first.startswith("setup-system: not installed (no apt-get: not Debian or Ubuntu;")
    assert sorted(re.sub(r"^.*\): ", "", first).split()) == missing and "openssh-client" in missing
    assert second == "setup-system: the tests that need them will skip (fail under CI=true); fix: sudo scripts/setup-system.sh"
    in_ci = subprocess.run(["/bin/bash", str(SETUP_SYSTEM)], env={**env, "CI": "true"}, capture_output=True, text=True, timeout=60)
    assert in_ci.returncode == 1 and in_ci.stdout == result.stdout


def test_require_tool_skips_outside_ci_and_fails_in_ci(require_tool, monkeypatch) -> None:
    assert require_tool("sh") == find_tool("sh")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^edgekit-no-tool not installed \(Debian package fake-pkg\): "
                                                    r"sudo scripts/setup-system.sh$"):
        require_tool("edgekit-no-tool", "fake-pkg")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^edgekit-no-tool not installed .*CI=true: \.ci/run's scripts/setup-system.sh"):
        require_tool("edgekit-no-tool", "fake-pkg")


@pytest.mark.slow
def test_installed_wheel_ships_the_lock(tmp_path: Path, edgekit_wheel: Path) -> None:
    wheel = edgekit_wheel
    assert any(n.endswith(".data/data/share/edgekit/constraints.txt") for n in zipfile.ZipFile(wheel).namelist())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # without PYTHONPATH: a checkout on it would satisfy pip and shadow the wheel's edgekit
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKIT_DATA_DIR")}
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, env=env)
    # a bare venv (no dependencies): the lock is found, and every locked package is reported missing
    code = "import json; from edgekit.doctor import diagnose; print(json.dumps(diagnose()['lock']))"
    out = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lock = json.loads(out.stdout)
    assert Path(lock["path"]) == venv / "share" / "edgekit" / "constraints.txt"
    assert Path(lock["path"]).read_text() == LOCK.read_text()
    assert {d["package"] for d in lock["differs"] if d["installed"] is None} >= {"torch", "onnx", "numpy", "click"}
