"""A tiny LLM bundle made in code (docs/llm-bundle.md), for the runner's tests and anyone else who
needs one until `edgekit build` writes LLM bundles.

From :func:`tiny_llama_folder` (2 layers, 96 ids; made with ``proj_scale=PROJ_SCALE``, so greedy
continuations vary and depend on the whole context): the fp32 ONNX of ``edgekit.llm.export`` (and
its .ort), a word-level ``tokenizer.json`` made with the `tokenizers` library (the 96 ids: 3
specials and 93 words, BOS added by its post-processor), ``golden_llm.npz`` from the torch
``KVDecoder`` and a manifest. The torch references here (greedy tokens, perplexity) recompute the
whole sequence every step with an empty cache: independent of the cache path the runner tests.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.runner import RUNNER_PATH

SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1 (bos_token_id of the tiny config), 2 (eos)
WORDS = [c + v for c in "bdfgklmnprstvwz" for v in "aeiouy"] + ["the", "a", "of"]
CONTEXT, PREFILL_CHUNK, NEW_TOKENS, OPSET = 64, 16, 8, 18
PROJ_SCALE = 0.3
PROMPTS = ("ba be bi", "the ka of lo mu ne pi ro su ty",
           "a da de di do du dy fa fe fi fo fu fy ga ge gi go gu gy ka ke")  # 4, 11 and 22 ids
FP32_TOLERANCE = {"min_token_match": 0.99, "min_logits_cosine": 0.9999}


def word_tokenizer() -> Any:
    """Whitespace words -> ids, unknown words -> <unk>, "<s>" prepended; decode joins words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {word: i for i, word in enumerate(SPECIALS + WORDS)}
    assert len(vocab) == 96
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens(SPECIALS)
    return tokenizer


def sample_text(words: int, seed: int = 0) -> str:
    """``words`` random vocabulary words (one token each; the tokenizer adds <s>)."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


def torch_logits(decoder: Any, ids: list[int], rows: list[int]) -> np.ndarray:
    """The torch decoder on the whole sequence, empty cache: float32 logits [len(rows), vocab]."""
    import torch

    c, t = decoder.config, len(ids)
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    bias = torch.triu(torch.full((t, t), -1e9), 1)
    with torch.no_grad():
        logits, _, _ = decoder(torch.tensor([ids]), torch.arange(t)[None], bias, empty, empty.clone(),
                               torch.tensor(rows, dtype=torch.int64))
    return logits.numpy()


def torch_greedy(decoder: Any, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """Greedy continuation (no EOS stop) and the first step's logits."""
    ids, first = list(prompt), None
    for _ in range(new_tokens):
        logits = torch_logits(decoder, ids, [len(ids) - 1])[0]
        first = logits if first is None else first
        ids.append(int(np.argmax(logits)))
    return ids[len(prompt):], first


def torch_perplexity(decoder: Any, tokens: list[int], context: int) -> tuple[float, int]:
    """exp(mean NLL) over consecutive windows of ``context`` tokens, float64: (value, tokens)."""
    nll, count = 0.0, 0
    for start in range(0, len(tokens), context):
        window = tokens[start:start + context]
        if len(window) < 2:
            continue
        logits = torch_logits(decoder, window, list(range(len(window) - 1))).astype(np.float64)
        top = logits.max(1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        nll -= float(logp[np.arange(len(window) - 1), window[1:]].sum())
        count += len(window) - 1
    return float(np.exp(nll / count)), count


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def private_copy(built: Path, dst: Path) -> Path:
    """A copy of a built bundle (tensor or LLM) a test may tamper with, holding the runner under test."""
    shutil.copytree(built, dst)
    shutil.copyfile(RUNNER_PATH, dst / "edgekit_runner.py")
    return dst


def refresh_artifact(bundle: Path, file: str) -> None:
    """Rewrite an artifact's bytes and sha256 in the manifest after changing the file, so only
    the verdict (not the integrity check) can refuse it."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["file"] == file:
            art.update(bytes=(bundle / file).stat().st_size, sha256=sha256(bundle / file))
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _to_ort(onnx_path: Path, ort_path: Path) -> None:
    """The in-process `convert_onnx_models_to_ort` (BASIC optimizations keep it portable)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(ort_path)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def _golden(decoder: Any, tokenizer: Any, path: Path) -> None:
    prompts = [tokenizer.encode(text).ids for text in PROMPTS]
    ids = np.zeros((len(prompts), max(map(len, prompts))), np.int64)
    reference, first = [], []
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = prompt
        tokens, logits = torch_greedy(decoder, prompt, NEW_TOKENS)
        reference.append(tokens)
        first.append(logits)
    np.savez(path, prompt_ids=ids, prompt_lengths=np.array([len(p) for p in prompts], np.int64),
             reference_tokens=np.array(reference, np.int64), first_logits=np.stack(first).astype(np.float32))


def _artifact(bundle: Path, file: str, fmt: str) -> dict[str, Any]:
    return {"file": file, "format": fmt, "precision": "fp32", "runtime": "onnxruntime",
            "bytes": (bundle / file).stat().st_size, "sha256": sha256(bundle / file),
            "tolerance": dict(FP32_TOLERANCE)}


def make_llm_bundle(out: Path, hf_folder: Path, *, ort_format: bool = True) -> Path:
    """Write the bundle into ``out`` (created) from the HF folder ``hf_folder``; return ``out``."""
    from edgekit.llm.export import export_decoder
    from edgekit.llm.gqa import to_shared_cache
    from edgekit.llm.model import load_decoder

    out.mkdir(parents=True)
    config, decoder = load_decoder(hf_folder, CONTEXT)
    export_decoder(decoder, out / "model_fp32.onnx", opset=OPSET)
    to_shared_cache(out / "model_fp32.onnx")
    artifacts = [("model_fp32.onnx", "onnx")]
    if ort_format:
        _to_ort(out / "model_fp32.onnx", out / "model_fp32.ort")
        artifacts.append(("model_fp32.ort", "ort"))
    tokenizer = word_tokenizer()
    tokenizer.save(str(out / "tokenizer.json"))
    _golden(decoder, tokenizer, out / "golden_llm.npz")
    manifest = {
        "schema": 1, "edgekit_version": "0.1.0", "target": "host-test", "kind": "llm",
        "llm": {"contract": "edgekit-kv-2", "family": config.family, "layers": config.layers,
                "kv_heads": config.kv_heads, "head_dim": config.head_dim, "vocab": config.vocab,
                "context": CONTEXT, "prefill_chunk": PREFILL_CHUNK, "bos_token_id": config.bos_token_id,
                "eos_token_ids": list(config.eos_token_ids), "tokenizer": "tokenizer.json"},
        "golden": {"file": "golden_llm.npz", "sha256": sha256(out / "golden_llm.npz"), "prompts": len(PROMPTS),
                   "new_tokens": NEW_TOKENS},
        "runtime_defaults": {"ort": {"provider": "CPUExecutionProvider", "threads": 1}},
        "artifacts": [_artifact(out, file, fmt) for file, fmt in artifacts],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copyfile(RUNNER_PATH, out / "edgekit_runner.py")
    return out
