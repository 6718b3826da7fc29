"""Shared fixtures: tiny models defined in code and bundles built once per session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from loopback_sshd import sshd  # noqa: E402,F401  (the fixture: a real sshd on loopback)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY_CNN = textwrap.dedent('''
    import torch, torch.nn as nn
    CALIBRATION = "digits"
    TASK = "classification"
    INPUT_NAMES = ["input"]
    OUTPUT_NAMES = ["logits"]

    def factory():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                              nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        return model, (torch.zeros(1, 1, 8, 8),)

    def conv_only():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, padding=1),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return model, (torch.zeros(1, 1, 8, 8),)

    def train_data():
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images[:600] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
        y = torch.tensor(digits.target[:600])
        return x[:500], y[:500], x[500:], y[500:]

    def evaluate(model, x, y):
        with torch.no_grad():
            return {"hook_top1": (model(x).argmax(1) == y).float().mean().item(), "hook_samples": len(x)}

    def no_example():
        return factory()[0]

    def not_a_module():
        return 42

    def broken():
        raise RuntimeError("boom")
''')


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_setup(reason: str) -> None:
    """The one rule for a test whose machine set-up is missing: skip saying how to fix it, or,
    under CI=true, fail, since CI must have run scripts/setup-system.sh (.ci/run does)."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run's scripts/setup-system.sh must provide it)", pytrace=False)
    pytest.skip(reason)


def _require_tool(name: str, package: str | None = None) -> str:
    # imported here: the runner-* tox envs load this conftest without edgekit installed
    from edgekit.doctor import TEST_TOOLS, find_tool

    path = find_tool(name)
    if path is None:
        missing_setup(f"{name} not installed (Debian package {package or TEST_TOOLS[name]}): sudo scripts/setup-system.sh")
    return path


@pytest.fixture(scope="session")
def require_tool() -> Callable[..., str]:
    """``require_tool(name, package=None) -> path`` of a system tool (TEST_TOOLS names its package);
    missing, the test skips naming the package and scripts/setup-system.sh, or fails under CI=true."""
    return _require_tool


@pytest.fixture(scope="session")
def require_setup() -> Callable[[str], None]:
    """``require_setup(reason)``: the same rule for a set-up that is not a tool (e.g. root once)."""
    return missing_setup


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A user model file with several factories, good and bad."""
    path = tmp_path_factory.mktemp("models") / "tiny.py"
    path.write_text(TINY_CNN)
    return path


def _build_bundle(out: Path, target: str, model: str | None = None, **kwargs) -> dict:
    from edgekit import BuildOptions, build

    # ARM-kernel verification only where a test asks for it: otherwise which stages a build runs
    # would depend on whether this machine happens to have the emulated userland cached.
    kwargs.setdefault("verify_on", "none")
    return build(BuildOptions(target=target, model=model, out=out, latency_runs=kwargs.pop("latency_runs", 20), **kwargs))


@pytest.fixture(scope="session")
def edgekit_wheel(tmp_path_factory) -> Path:
    """edgekit built as a wheel, once per worker, from a copy of the checkout: pip builds in the
    source tree (build/, *.egg-info), where other workers are writing __pycache__ files at the
    same time (a file listed, then renamed away, failed one CI-like run)."""
    import shutil

    source = tmp_path_factory.mktemp("source") / "edgekit"
    skip = shutil.ignore_patterns(".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", "*.pyc")
    shutil.copytree(Path(__file__).resolve().parent.parent, source, ignore=skip, symlinks=True)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("edgekit-*.whl"))


@pytest.fixture(scope="session")
def build_bundle():
    """``build_bundle(out, target, model=None, **options) -> manifest`` through the public API."""
    return _build_bundle


@pytest.fixture(scope="session")
def example_cli_build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """README command: ``edgekit build --target rpi4 --out DIR --json`` on the bundled digits
    example, once per session (``--verify-on none`` and 20 latency runs, as ``build_bundle``)."""
    out = tmp_path_factory.mktemp("example") / "rpi4"
    result = subprocess.run([sys.executable, "-m", "edgekit", "build", "--target", "rpi4", "--out", str(out), "--json",
                             "--verify-on", "none", "--latency-runs", "20"],
                            capture_output=True, text=True, cwd=out.parent, timeout=1200)
    return out, result


@pytest.fixture(scope="session")
def example_bundle(example_cli_build) -> tuple[Path, dict]:
    """The bundled digits example built for rpi4, once per session (through the CLI: the same
    build serves the CLI's test); its manifest is the one ``--json`` printed."""
    out, result = example_cli_build
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads(result.stdout)


@pytest.fixture(scope="session")
def example_host_bundle(tmp_path_factory) -> tuple[Path, dict]:
    """The bundled digits example built for the host profile, once per session."""
    out = tmp_path_factory.mktemp("example-host") / "host"
    return out, _build_bundle(out, "host", latency_runs=0)


@pytest.fixture(scope="session")
def tiny_nnapi_bundle(tmp_path_factory, tiny_model_file) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("nnapi") / "bundle"
    return out, _build_bundle(out, "nnapi", f"{tiny_model_file}:factory", latency_runs=0)


@pytest.fixture(scope="session")
def tiny_rpi4_bundle(tmp_path_factory, tiny_model_file) -> Path:
    """The tiny CNN built for rpi4 once per session; tests that change files copy it first."""
    out = tmp_path_factory.mktemp("tiny-rpi4") / "bundle"
    _build_bundle(out, "rpi4", f"{tiny_model_file}:factory", latency_runs=0)
    return out


# ----------------------------------------------------------------------------- parallel runs
#: session/package fixtures too cheap to be worth keeping in one worker (each worker makes its own)
_CHEAP_SHARED = frozenset({"require_tool", "require_setup", "sshd", "build_bundle", "tiny_model_file", "tmp_path_factory",
                           "worker_id", "testrun_uid"})


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The session- and package-scoped fixtures of ``item`` that build something."""
    defs = getattr(item, "_fixtureinfo", None)
    if defs is None:
        return set()
    return {name for name, fixture in defs.name2fixturedefs.items()
            if name not in _CHEAP_SHARED and fixture and fixture[-1].scope in ("session", "package")}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``, setup.cfg): the tests of one file run in one
    worker (module fixtures are built once), and files sharing an expensive session or package
    fixture (the MiniLM bundle, the README build, the search...) in the same worker, so no
    build is made twice. Files are joined by union-find over the fixtures they share."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for item in items:
        for name in _shared_fixtures(item):
            parent[find(f"fixture:{name}")] = find(f"file:{item.path}")
    for item in items:
        item.add_marker(pytest.mark.xdist_group(find(f"file:{item.path}")))
