"""Fixtures for the device runner: one real hand-made bundle per session, copied per test.

The bundle comes from benchmarks/_tiny_bundle.py (shared with the overhead benchmark): a small CNN
trained on sklearn's 8x8 digits, exported to ONNX / ORT / TFLite fp32 / TFLite int8 by the real
tools, with golden.npz and a manifest.json following docs/bundle-format.md.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgekit.runner import RUNNER_PATH as RUNNER

from llm_bundle import private_copy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from _tiny_bundle import make_bundle  # noqa: E402

# Fast measurement settings: the tests check the mechanics, not the host's speed.
FAST = ["--runs", "10", "--warmup", "1", "--min-seconds", "0.02"]

# sitecustomize that makes chosen top-level packages unimportable, like an uninstalled one.
BLOCKER = """
import sys
BLOCKED = {blocked!r}
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("No module named " + repr(name) + " (blocked by the test)")
        return None
sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session (~20 s: torch training, dynamo export, onnx2tf)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return make_bundle(tmp_path_factory.mktemp("built") / "tiny", kind="tiny", threads=2)


@pytest.fixture
def bundle(built_bundle: Path, tmp_path: Path) -> Path:
    """A private copy a test may tamper with; always holding the runner under test."""
    return private_copy(built_bundle, tmp_path / "bundle")  # one copy rule for tensor and LLM bundles


@pytest.fixture(scope="session")
def er() -> ModuleType:
    """The runner loaded from its file, exactly as a device would run it."""
    spec = importlib.util.spec_from_file_location("edgekit_runner_under_test", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fast() -> list:
    """CLI flags for quick runs (tests check mechanics, not the host's speed)."""
    return list(FAST)


@pytest.fixture
def manifest_of() -> Callable[[Path], dict[str, Any]]:
    return lambda bundle: json.loads((bundle / "manifest.json").read_text())


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the bundle's own edgekit_runner.py in a fresh interpreter, optionally with some
    packages made unimportable (inherited by the runner's own per-artifact children)."""

    def run(bundle: Path, *args: str, block: Iterable[str] = (),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        full_env.pop("PYTHONPATH", None)
        if block:
            site = tmp_path / "blocker"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(block)))
            full_env["PYTHONPATH"] = str(site)
        cmd = [sys.executable, str(bundle / "edgekit_runner.py"), str(bundle), *args]
        # cwd outside the repo: the checkout must not be what makes imports work
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env,
                              cwd=str(tmp_path), timeout=600)

    return run
