"""The runner's LLM mode on a tiny real bundle (tests/llm_bundle.py): the KV-contract decoder,
greedy generation against torch, the golden verdict, perplexity and the CLI's errors."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from llm_bundle import (
    CONTEXT,
    PREFILL_CHUNK,
    PROJ_SCALE,
    WORDS,
    private_copy,
    refresh_artifact,
    sample_text,
    torch_greedy,
    torch_perplexity,
    word_tokenizer,
)
from tiny_models import tiny_llama_folder

GENERATION_KEYS = {"ttft_ms", "prefill_tok_s", "decode_tok_s", "decode_ms_p50", "decode_ms_p90",
                   "peak_rss_mb", "kv_cache_bytes", "tokens", "text"}
KV_BYTES = 2 * CONTEXT * 2 * 2 * 16 * 4  # key + value, [context, layers, kv_heads, head_dim] fp32
ONNX = "model_fp32.onnx"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("llm") / "hf", proj_scale=PROJ_SCALE)


@pytest.fixture(scope="module")
def built_llm(hf_folder: Path) -> Path:
    """Made once per module (~30 s: the dynamo export)."""
    from llm_bundle import make_llm_bundle

    return make_llm_bundle(hf_folder.parent / "bundle", hf_folder)


@pytest.fixture(scope="module")
def torch_decoder(hf_folder: Path) -> Any:
    from edgekit.llm.model import load_decoder

    return load_decoder(hf_folder, CONTEXT)[1]


@pytest.fixture
def llm(built_llm: Path, tmp_path: Path) -> Path:
    """A private copy a test may tamper with, holding the runner under test."""
    return private_copy(built_llm, tmp_path / "llm")


def _spec(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["llm"]


def _error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def _bench_prompt(bundle: Path) -> list[int]:
    with np.load(bundle / "golden_llm.npz") as g:
        first = g["prompt_ids"][0, :g["prompt_lengths"][0]].tolist()
    return (first * 64)[:CONTEXT // 2]


def test_ort_decoder_keeps_the_cache_in_place_and_matches_torch(er: ModuleType, llm: Path, torch_decoder) -> None:
    decoder = er.OrtDecoder.from_file(llm / ONNX, er.llm_spec(json.loads((llm / "manifest.json").read_text())))
    assert decoder.kv_cache_bytes == KV_BYTES == 32768
    prompt = word_tokenizer().encode(sample_text(20, seed=3)).ids  # 21 ids: two prefill chunks
    gen = er.generate(decoder, prompt, 12)
    tokens, first = torch_greedy(torch_decoder, prompt, 12)
    assert gen.tokens == tokens and len(gen.decode_ms) == 11
    assert len(set(tokens)) >= 6  # varied tokens: a broken cache would not reproduce them
    assert er.cosine(gen.first_logits, first) > 0.99999 and np.abs(gen.first_logits - first).max() < 1e-4
    # the session wrote keys into the caller's buffer: rows of the fed sequence equal torch's keys
    import torch
    seq = prompt + tokens[:-1]
    t, c = len(seq), torch_decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    with torch.no_grad():
        _, key, value = torch_decoder(torch.tensor([seq]), torch.arange(t)[None], torch.triu(torch.full((t, t), -1e9), 1),
                                      empty, empty.clone(), torch.tensor([t - 1]))
    # layer i's buffer [1, kv_heads, context, head_dim] (the per-layer ORT form) as torch's rows
    stacked = lambda cache: np.transpose(cache[:, 0, :, :t], (2, 0, 1, 3))  # noqa: E731
    assert decoder.key.shape == (c.layers, 1, c.kv_heads, CONTEXT, c.head_dim)
    assert np.abs(stacked(decoder.key) - key.numpy()).max() < 1e-4
    assert np.abs(stacked(decoder.value) - value.numpy()).max() < 1e-4
    assert not decoder.key[:, :, :, t:].any()  # nothing written past the sequence
    assert len(er.chunks(prompt, PREFILL_CHUNK)) == 2
    # reset forgets the length (the op never reads past it) and a rerun is the same
    assert decoder.rows_written == t
    decoder.reset()
    assert decoder.rows_written == 0
    assert er.generate(decoder, prompt, 12).tokens == tokens


def test_ort_decoder_binds_each_step_shape_once_and_returns_its_own_logits(er: ModuleType, llm: Path) -> None:
    """The feeds are bound once per (tokens, rows) shape and filled in place: steps of
    alternating shapes give a fresh decoder's logits, and a returned array is not rewritten by
    the next step."""
    spec = er.llm_spec(json.loads((llm / "manifest.json").read_text()))
    reused, fresh = (er.OrtDecoder.from_file(llm / ONNX, spec) for _ in range(2))
    plan = [([5, 7, 9], 0, [1, 2]), ([11], 3, [0]), ([13], 4, [0]), ([2, 4], 5, [0, 1]), ([6], 7, [0])]
    kept = [reused.step(ids, past, rows) for ids, past, rows in plan]
    assert [k.shape for k in kept] == [(2, 96), (1, 96), (1, 96), (2, 96), (1, 96)]
    assert reused.bound_shape == (1, 1)
    sequence = [i for ids, _, _ in plan for i in ids]
    for (ids, past, rows), got in zip(plan, kept):  # the fresh one: the same history in one prefill
        fresh.reset()
        if past:
            fresh.step(sequence[:past], 0, [0])
        assert np.abs(got - fresh.step(ids, past, rows)).max() < 1e-5
    assert not np.array_equal(kept[1], kept[2])  # each step's own array, not the shared buffer


def test_bundle_verifies_and_benchmarks_every_artifact(llm: Path, cli, tmp_path: Path, torch_decoder) -> None:
    out = tmp_path / "report.json"
    proc = cli(llm, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["file"] for r in results] == [ONNX, "model_fp32.ort"]
    bench = _bench_prompt(llm)  # 32 ids (half the context), then 33 new tokens: the cache's 64 rows
    expected, _ = torch_greedy(torch_decoder, bench, CONTEXT - len(bench) + 1)
    for r in results:
        cor, gen = r["correctness"], r["generation"]
        assert r["error"] is None and cor["passed"] and cor["broken"] == []
        assert cor["token_match"] == 1.0 and cor["logits_cosine"] > 0.9999
        assert cor["prompts"] == 3 and cor["new_tokens"] == 8
        assert set(gen) == GENERATION_KEYS
        assert gen["tokens"] == expected and len(expected) == 33 and len(set(expected)) >= 10
        assert gen["kv_cache_bytes"] == KV_BYTES
        assert gen["text"] == word_tokenizer().decode(expected) and set(gen["text"].split()) <= set(WORDS)
        assert gen["ttft_ms"] > 0 and 0 < gen["decode_ms_p50"] <= gen["decode_ms_p90"]
        assert gen["decode_tok_s"] == pytest.approx(1e3 / gen["decode_ms_p50"], rel=1e-3)
        assert gen["prefill_tok_s"] == pytest.approx(32 / (gen["ttft_ms"] / 1e3), rel=1e-2)
        assert gen["peak_rss_mb"] >= r["memory_mb"]["after_load_rss"] > 0
        assert r["runtime"]["threads"] == 1 and r["runtime"]["name"] == "onnxruntime"
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(r["file"]))
        assert line.rstrip().endswith("PASS")


def test_perturbed_weights_fail_the_verdict_with_exit_1(llm: Path, cli, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(llm / ONNX))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the tied embedding
    weights = numpy_helper.to_array(big)
    noise = np.random.default_rng(0).normal(0, 0.5 * weights.std(), weights.shape).astype(weights.dtype)
    big.CopyFrom(numpy_helper.from_array(weights + noise, big.name))
    onnx.save(model, str(llm / ONNX))
    refresh_artifact(llm, ONNX)  # integrity passes: only the verdict can refuse it
    out = tmp_path / "r.json"
    proc = cli(llm, "--json", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    bad, good = json.loads(out.read_text())["results"]
    assert bad["error"] is None and not bad["correctness"]["passed"]
    assert bad["correctness"]["token_match"] < 0.99 or bad["correctness"]["logits_cosine"] < 0.9999
    assert bad["correctness"]["logits_cosine"] < 0.999 and bad["correctness"]["broken"]
    assert good["correctness"]["passed"] and good["correctness"]["token_match"] == 1.0
    assert next(ln for ln in proc.stdout.splitlines() if ln.startswith(ONNX)).rstrip().endswith("FAIL")
    alone = cli(llm, "--artifact", ONNX)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr


def test_perplexity_over_a_text_longer_than_the_context_equals_torch(er: ModuleType, llm: Path, cli, tmp_path: Path,
                                                                    torch_decoder) -> None:
    text = sample_text(150, seed=1)
    tokens = word_tokenizer().encode(text).ids
    assert [len(w) for w in er.perplexity_windows(tokens, CONTEXT)] == [64, 64, 23]
    value, scored = torch_perplexity(torch_decoder, tokens, CONTEXT)
    (tmp_path / "eval.txt").write_text(text)
    out = tmp_path / "r.json"
    proc = cli(llm, "--artifact", ONNX, "--perplexity", str(tmp_path / "eval.txt"), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())["results"][0]["perplexity"]
    assert got["tokens"] == scored == 63 + 63 + 22
    assert got["value"] == pytest.approx(value, rel=1e-3)
    # random weights with a tied 0.5-scale embedding give peaked logits, confidently wrong on random
    # words: far worse than uniform (96), measured ~6.5e11, i.e. a mean NLL of ~27 nats
    assert value > 96 and np.isfinite(value)
    assert f"perplexity {got['value']:.4f} over 148 tokens" in proc.stdout


def test_prompt_prints_the_generated_text(llm: Path, cli, torch_decoder) -> None:
    prompt = "the ka of lo"
    ids = word_tokenizer().encode(prompt).ids
    expected, _ = torch_greedy(torch_decoder, ids, 6)
    if 2 in expected:  # the tiny config's EOS: generation stops after it
        expected = expected[:expected.index(2) + 1]
    proc = cli(llm, "--artifact", ONNX, "--prompt", prompt, "--max-new-tokens", "6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == word_tokenizer().decode(expected) and proc.stdout.strip()
    assert "Traceback" not in proc.stderr and f"{ONNX}: {len(expected)} tokens, ttft" in proc.stderr


def test_prompt_ids_work_without_tokenizers_and_prompt_says_how_to_fix(llm: Path, cli, tmp_path: Path,
                                                                       torch_decoder) -> None:
    blocked = ["tokenizers", "torch", "edgekit"]
    expected, _ = torch_greedy(torch_decoder, [1, 5, 9, 13], 5)
    expected = expected[:expected.index(2) + 1] if 2 in expected else expected
    proc = cli(llm, "--prompt-ids", "1,5,9,13", "--max-new-tokens", "5", block=blocked)  # both artifacts
    assert proc.returncode == 0, proc.stderr
    ids = ",".join(map(str, expected))
    assert proc.stdout.split() == ["==", ONNX, ids, "==", "model_fp32.ort", ids]
    proc = cli(llm, "--prompt", "ba be", block=blocked)
    assert proc.returncode == 4
    assert _error_line(proc) == ("edgekit-runner: --prompt needs the tokenizers package: pip install tokenizers "
                                 "(or pass token ids: --prompt-ids 1,2,3)")
    out = tmp_path / "r.json"
    proc = cli(llm, "--artifact", ONNX, "--json", str(out), block=blocked)  # the golden verdict needs none
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads(out.read_text())["results"]
    assert res["correctness"]["token_match"] == 1.0 and res["generation"]["text"] is None


@pytest.mark.parametrize("args, line", [
    (["--prompt-ids", "1,x,3"], "edgekit-runner: error: argument --prompt-ids: '1,x,3' is not comma-separated token ids "
                                "like 1,2,3 (see edgekit-runner --help)"),
    (["--prompt-ids", "1,-2"], "edgekit-runner: error: argument --prompt-ids: '1,-2' is not comma-separated token ids "
                               "like 1,2,3 (see edgekit-runner --help)"),
    (["--prompt-ids", "1,96"], "edgekit-runner: token id 96 is outside the vocabulary (0 .. 95)"),
    (["--prompt-ids", ",".join(["5"] * 65)], "edgekit-runner: the prompt has 65 tokens but the context holds 64: shorten it"),
    (["--prompt", sample_text(70)], "edgekit-runner: the prompt has 71 tokens but the context holds 64: shorten it"),
    (["--max-new-tokens", "0"], "edgekit-runner: error: --max-new-tokens 0 must be >= 1 (see edgekit-runner --help)"),
    (["--prompt", "ba", "--prompt-ids", "1"], "edgekit-runner: error: argument --prompt-ids: not allowed with argument "
                                              "--prompt (see edgekit-runner --help)"),
    (["--perplexity", "/nonexistent/eval.txt"], "edgekit-runner: --perplexity: cannot read /nonexistent/eval.txt: "
                                                "[Errno 2] No such file or directory: '/nonexistent/eval.txt'"),
])
def test_bad_inputs_are_one_line_and_nonzero(llm: Path, cli, args: list[str], line: str) -> None:
    proc = cli(llm, *args)
    assert proc.returncode == 2
    assert _error_line(proc) == line and proc.stdout == ""


def test_llm_flags_on_a_tensor_bundle_are_refused(cli) -> None:
    tensor = Path(__file__).resolve().parents[1] / "runner_standalone" / "example_rpi4"
    proc = cli(tensor, "--prompt-ids", "1,2")
    assert proc.returncode == 2
    assert _error_line(proc) == 'edgekit-runner: --prompt-ids applies to LLM bundles (manifest "kind": "llm") only'


def test_token_match_and_the_verdict(er: ModuleType) -> None:
    # counted up to each prompt's first difference: 2 of 3, then 1 of 3 (the match after it is not counted)
    assert er.token_match([[1, 2, 3], [4, 0, 6]], np.array([[1, 2, 9], [4, 5, 6]])) == pytest.approx(3 / 6)
    assert er.token_match([[7, 8]], [[7, 8]]) == 1.0 and er.token_match([[0, 8]], [[7, 8]]) == 0.0
    tol = {"min_token_match": 0.5, "min_logits_cosine": 0.98}
    assert er.judge_llm({"token_match": 0.5, "logits_cosine": 0.98}, tol)
    assert er.llm_broken_bounds({"token_match": 0.4, "logits_cosine": 0.97}, tol) == [
        "token match 0.4000 < 0.5", "logits cosine 0.970000 < 0.98"]
    assert er.llm_broken_bounds({"token_match": 1.0, "logits_cosine": float("nan")}, tol) == ["logits contain NaN or Inf"]
    assert er.judge_llm({"token_match": 0.0, "logits_cosine": 0.0}, {})  # no bound set: nothing to break
    assert er.perplexity_windows(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
