"""`edgekit build` on a decoder LLM (the tiny llama folder): artifacts, verdicts, quality and the
bundle, end to end through the real runtimes; bad inputs refused before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.errors import UnsupportedError
from edgekit.llm.source import LlmSourceError
from edgekit.options import BuildOptions
from edgekit.pipeline import build
from tests.tiny_models import tiny_llama_folder


@pytest.fixture(scope="module")
def tiny_llm_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_build")
    folder = tiny_llama_folder(root / "tiny", proj_scale=0.3)
    manifest = build(BuildOptions(target="rpi4", model=str(folder), out=root / "bundle"))
    return folder, root / "bundle", manifest


def _artifact(manifest, precision):
    return next(a for a in manifest["artifacts"] if a["precision"] == precision and a["format"] == "onnx")


def test_llm_bundle_has_the_documented_files(tiny_llm_build):
    _, bundle, manifest = tiny_llm_build
    assert manifest["kind"] == "llm" and manifest["llm"]["contract"] == "edgekit-kv-1"
    assert manifest["llm"]["context"] == 512 and manifest["llm"]["layers"] == 2
    for name in ("manifest.json", "tokenizer.json", "golden_llm.npz", "edgekit_runner.py", "README.md"):
        assert (bundle / name).is_file(), name
    golden = np.load(bundle / "golden_llm.npz", allow_pickle=False)
    assert golden["reference_tokens"].shape == (16, 32) and golden["first_logits"].shape == (16, 96)


def test_fp32_artifact_passes_with_exact_figures(tiny_llm_build):
    _, _, manifest = tiny_llm_build
    fp32 = _artifact(manifest, "fp32")
    v = fp32["verification"]
    assert v["passed"] and v["token_match"] == 1.0 and v["logits_cosine"] > 0.99999
    quality = manifest["accuracy"]["artifacts"][fp32["file"]]
    assert abs(quality["perplexity_increase_pct"]) < 0.01 and quality["top1_agreement"] == 1.0
    assert quality["continuation_match"] == 1.0
    assert manifest["accuracy"]["reference"]["tokens"] > 500  # the held-out split, not a handful of tokens
    speed = fp32["host_latency_ms"]
    assert speed["decode_tok_s"] > 0 and speed["where"] == "build host"


def test_the_bundle_generates_on_the_host(tiny_llm_build):
    _, bundle, _ = tiny_llm_build
    result = CliRunner().invoke(main, ["generate", str(bundle), "return a tuple for the given", "--max-new-tokens", "8",
                                       "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output[result.output.index("{"):])
    assert len(figures["tokens"]) == 8 and figures["decode_tok_s"] > 0


def test_compression_flags_are_refused_for_llms(tmp_path):
    folder = tiny_llama_folder(tmp_path / "tiny")
    with pytest.raises(UnsupportedError, match="not available for language models"):
        build(BuildOptions(target="rpi4", model=str(folder), out=tmp_path / "out", recipe=("prune=structured:0.5",)))
    assert not (tmp_path / "out").exists()


def test_pickle_only_folder_is_refused_and_keeps_the_earlier_bundle(tmp_path, tiny_llm_build):
    folder = tiny_llama_folder(tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    _, bundle, _ = tiny_llm_build
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(LlmSourceError, match="pickle checkpoints are never loaded"):
        build(BuildOptions(target="rpi4", model=str(folder), out=bundle, force=True))
    assert (bundle / "manifest.json").read_bytes() == before
