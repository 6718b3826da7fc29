"""Decoder LLM bundles on ARM kernels (qemu-aarch64 -cpu cortex-a72): `--verify-on aarch64` in the
build, and `edgekit bench --emulate aarch64` generating the host's greedy tokens."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.device.bench import bench
from edgekit.device.emulate import prepare
from edgekit.device.settings import RunnerSettings
from edgekit.options import BuildOptions
from edgekit.pipeline import build
from edgekit.runner.edgekit_runner import OrtDecoder, bench_prompt, generate
from tests.tiny_models import tiny_llama_folder

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def arm_bundle(tmp_path_factory):
    prepare(runtime=["onnxruntime"], progress=print)
    root = tmp_path_factory.mktemp("llm_arm")
    folder = tiny_llama_folder(root / "tiny", proj_scale=0.3)
    manifest = build(BuildOptions(target="rpi4", model=str(folder), out=root / "bundle", verify_on="aarch64", latency_runs=0))
    return root / "bundle", manifest


def test_build_records_arm_verdicts_for_every_artifact(arm_bundle):
    _, manifest = arm_bundle
    for artifact in manifest["artifacts"]:
        arm = artifact["verdicts"]["arm_emulated"]
        assert arm["passed"] and arm["token_match"] == 1.0 and arm["logits_cosine"] > 0.99999, artifact["file"]
        assert "cortex-a72" in arm["emulator"]


def test_emulated_bench_generates_the_hosts_tokens(arm_bundle):
    bundle, manifest = arm_bundle
    report = bench(bundle, RunnerSettings(threads=2), emulate="aarch64")[0]
    golden = dict(np.load(bundle / "golden_llm.npz", allow_pickle=False))
    prompt, _ = bench_prompt(golden, manifest["llm"], 32)  # the runner's own benchmark workload
    host_tokens = generate(OrtDecoder.from_file(bundle / "model_fp32.onnx", manifest["llm"], threads=2), prompt, 32).tokens
    assert len(report["results"]) == len(manifest["artifacts"])
    for result in report["results"]:
        arm_tokens = result["generation"]["tokens"][:32]
        assert sum(a == b for a, b in zip(arm_tokens, host_tokens)) >= 30, (result["file"], arm_tokens, host_tokens)
        assert result["correctness"]["passed"]
