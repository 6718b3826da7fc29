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
from edgekit.runner.edgekit_runner import OrtDecoder, bench_prompt, generate, reference_model
from tests.llm.test_build import tiny_profile
from tests.tiny_models import tiny_llama_folder

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def arm_bundle(tmp_path_factory):
    prepare(runtime=["onnxruntime"], progress=print)
    root = tmp_path_factory.mktemp("llm_arm")
    folder = tiny_llama_folder(root / "tiny", proj_scale=0.3)
    profile = tiny_profile(root / "tiny-llm.toml", tflite=False, lean=True)
    manifest = build(BuildOptions(target=str(profile), model=str(folder), out=root / "bundle", verify_on="aarch64",
                                  latency_runs=0))
    return root / "bundle", manifest


def test_build_records_arm_verdicts_for_every_artifact(arm_bundle):
    _, manifest = arm_bundle
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "int8", "int4"}
    for artifact in manifest["artifacts"]:
        arm, host = artifact["verdicts"]["arm_emulated"], artifact["verification"]
        assert arm["passed"] and "cortex-a72" in arm["emulator"], artifact["file"]
        # the verdict the x86 build host gave (reference semantics: float products on the dequantized
        # weights) is the A72's: without dot-product instructions ORT computes MatMulNBits in float
        # there, while this host's VNNI kernels quantize the activations (its figures: host_kernels)
        assert abs(arm["token_match"] - host["token_match"]) <= 0.02, artifact["file"]
        assert abs(arm["logits_cosine"] - host["logits_cosine"]) <= 1e-3, artifact["file"]


def test_emulated_bench_generates_the_hosts_tokens(arm_bundle):
    bundle, manifest = arm_bundle
    report = bench(bundle, RunnerSettings(threads=2), emulate="aarch64")[0]
    golden = dict(np.load(bundle / "golden_llm.npz", allow_pickle=False))
    prompt, _ = bench_prompt(golden, manifest["llm"], 32)  # the runner's own benchmark workload
    assert len(report["results"]) == len(manifest["artifacts"])
    for result, artifact in zip(report["results"], manifest["artifacts"]):
        path = bundle / artifact.get("reference_via") if artifact.get("reference_via") else bundle / artifact["file"]
        # the host's tokens by the arithmetic that judged the artifact here (see reference_model)
        model = reference_model(path) if artifact["verification"]["semantics"] == "reference" else path
        host_tokens = generate(OrtDecoder.from_file(model, manifest["llm"], threads=2), prompt, 32).tokens
        arm_tokens = result["generation"]["tokens"][:32]
        assert sum(a == b for a, b in zip(arm_tokens, host_tokens)) >= 30, (result["file"], arm_tokens, host_tokens)
        assert result["correctness"]["passed"]
