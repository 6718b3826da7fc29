"""The runner fixture bundle (tests/runner_standalone) is what a build makes today."""
from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "runner_standalone" / "example_rpi4"


def test_fixture_bundle_matches_a_fresh_build(example_bundle):
    _, fresh = example_bundle
    committed = json.loads((FIXTURE / "manifest.json").read_text())
    # .ort bytes depend on the install path (onnxruntime serialises address-seeded hash maps, see
    # edgekit/isolated.py), so a clone elsewhere makes another, equivalent .ort: compare the rest
    hashes = lambda m: {a["file"]: a["sha256"] for a in m["artifacts"] if a["format"] != "ort"}  # noqa: E731
    assert len(hashes(fresh)) == 3 and hashes(committed) == hashes(fresh), "regenerate: see tests/runner_standalone/test_standalone.py"
    assert (FIXTURE / "edgekit_runner.py").read_bytes() == (Path(__file__).parents[1] / "edgekit/runner/edgekit_runner.py").read_bytes()
