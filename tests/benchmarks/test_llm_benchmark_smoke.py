"""benchmarks/llm_benchmark.py's mechanics on a tiny llama, without the big model or any anchor
engine: the device runner's decoder as driven here (stepping equals teacher forcing, chunked
prompts), exact greedy token counts (the runner's generate and the common greedy loop), and
one --quick run end to end through its subprocess, wait4 RSS and report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import tiny_llama_folder

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import _llm_engines  # noqa: E402
import llm_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("onnxruntime")
    from edgekit.llm.export import export_decoder
    from edgekit.llm.gqa import to_shared_cache
    from edgekit.llm.model import load_decoder

    folder = tiny_llama_folder(tmp_path_factory.mktemp("llmbench") / "hf")
    _, decoder = load_decoder(folder, 256)
    onnx = folder.parent / "tiny_kv.onnx"
    export_decoder(decoder, onnx, opset=18)
    to_shared_cache(onnx)  # the ONNX Runtime form, as a bundle ships it
    return folder, onnx


def test_the_runner_engine_steps_as_it_teacher_forces(tiny):
    engine = _llm_engines.edgekit_engine(str(tiny[1]), 1, 64, prefill_chunk=4)  # chunked prompts too
    ids = list(range(3, 23))
    engine.reset()
    forced = engine.feed(ids, all_logits=True)
    engine.reset()
    stepped = [engine.feed(ids[:5])[-1]] + [engine.feed([t])[-1] for t in ids[5:]]
    np.testing.assert_allclose(forced[4:], np.stack(stepped), atol=1e-4)


def test_generation_gives_exactly_the_tokens_asked_for(tiny):
    engine = _llm_engines.edgekit_engine(str(tiny[1]), 1, 64)
    out = _llm_engines.generate(engine, [5, 6, 7], 9)
    assert len(out["tokens"]) == 9 and out["decode_tok_s"] > 0
    assert _llm_engines.greedy(engine, [5, 6, 7], 9)[0] == out["tokens"]  # the loop other engines use
    assert _llm_engines.generate(engine, [5, 6, 7], 9)["tokens"] == out["tokens"]
    ppl = _llm_engines.perplexity(engine, [list(range(3, 40))])  # random weights: only finite and > 1
    assert ppl["tokens"] == 36 and np.isfinite(ppl["value"]) and ppl["value"] > 1


def test_a_quick_run_end_to_end(tiny, tmp_path):
    folder, onnx = tiny
    out = tmp_path / "llm.json"
    assert llm_benchmark.main(["--quick", "--hf", str(folder), "--edgekit", str(onnx), "--engines", "edgekit",
                               "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["engine"] == "edgekit tiny_kv" and len(row["tokens"]) == 16 and row["peak_rss_mb"] > 10
    assert row["first_divergence_from_reference"] is None and np.isfinite(row["perplexity"])
    assert "QUICK" in out.with_suffix(".md").read_text() and result["load_average_before"] >= 0
