"""The decoder's TFLite artifact (one .tflite, signatures prefill and decode, static shapes) on the
tiny llama, run by the device runner's TFLite decoder and checked against the torch KVDecoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.llm.model import MASKED, load_decoder
from edgekit.llm.tflite import LlmTFLiteOptions, convert_decoder_tflite
from edgekit.runner.edgekit_runner import TFLiteDecoder

from tiny_models import tiny_llama_folder

CONTEXT, CHUNK = 32, 8
PROMPT = [1, 17, 42, 5, 88, 3, 61, 29, 70, 11, 54]  # 11 tokens: a full chunk and a padded one


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_tflite")
    folder = tiny_llama_folder(root / "hf")
    files = {p: convert_decoder_tflite(folder, root / f"model_{p}.tflite", root / "work",
                                       options=LlmTFLiteOptions(precision=p, prefill_chunk=CHUNK, context=CONTEXT))
             for p in ("fp32", "int8_dynamic")}
    config, decoder = load_decoder(folder, CONTEXT)
    decoder.fused = False  # eager torch in plain ops (the same math, faster than torch.onnx.ops' reference kernels)
    llm = {"layers": config.layers, "kv_heads": config.kv_heads, "head_dim": config.head_dim,
           "context": CONTEXT, "prefill_chunk": CHUNK, "vocab": config.vocab}
    return files, decoder, llm


def _torch_step(decoder, ids, past_key, past_value, rows):
    """The reference: dynamic P (the cache so far), T = len(ids)."""
    p, t = len(past_key), len(ids)
    bias = torch.zeros(t, p + t)
    bias[:, p:] = torch.triu(torch.full((t, t), MASKED), 1)
    with torch.no_grad():
        logits, key, value = decoder(torch.tensor([ids]), torch.arange(p, p + t)[None], bias, past_key, past_value,
                                     torch.tensor(rows))
    return logits.numpy(), torch.cat([past_key, key]), torch.cat([past_value, value])


def _torch_greedy(decoder, prompt, steps):
    c = decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    logits, key, value = _torch_step(decoder, prompt, empty, empty.clone(), [len(prompt) - 1])
    tokens = []
    for _ in range(steps):
        tokens.append(int(logits[-1].argmax()))
        logits, key, value = _torch_step(decoder, [tokens[-1]], key, value, [0])
    return tokens


def _tflite_greedy(runner, prompt, steps):
    runner.reset()
    logits = runner.step(prompt, 0, [len(prompt) - 1])
    tokens = []
    for i in range(steps):
        tokens.append(int(logits[-1].argmax()))
        logits = runner.step([tokens[-1]], len(prompt) + i, [0])
    return tokens


def test_one_file_two_static_signatures_sharing_weights(built):
    files, decoder, _ = built
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(files["fp32"]))
    assert sorted(interpreter.get_signature_list()) == ["decode", "prefill"]
    shapes = {n: interpreter.get_signature_runner(n).get_input_details()["attention_bias"]["shape"].tolist()
              for n in ("prefill", "decode")}
    assert shapes == {"prefill": [CHUNK, CONTEXT + CHUNK], "decode": [1, CONTEXT + 1]}
    weights = sum(p.numel() * 4 for p in {id(p): p for p in decoder.parameters()}.values())
    assert files["fp32"].stat().st_size < 1.4 * weights  # stored once, not once per signature
    assert files["int8_dynamic"].stat().st_size < 0.6 * files["fp32"].stat().st_size


def test_prefill_and_decode_match_torch(built):
    files, decoder, llm = built
    runner = TFLiteDecoder.from_file(files["fp32"], llm, threads=2)
    rows = list(range(len(PROMPT)))
    c = decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    ref, key, value = _torch_step(decoder, PROMPT, empty, empty.clone(), rows)
    got = runner.step(PROMPT, 0, rows)  # prefill signature, twice (8 + 3 padded)
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(runner.key[:len(PROMPT)] - key.numpy()).max() < 1e-4
    assert np.abs(runner.value[:len(PROMPT)] - value.numpy()).max() < 1e-4
    ref, key, _ = _torch_step(decoder, [7], key, value, [0])
    got = runner.step([7], len(PROMPT), [0])  # decode signature
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(runner.key[:len(PROMPT) + 1] - key.numpy()).max() < 1e-4
    assert runner.kv_cache_bytes == 2 * CONTEXT * c.layers * c.kv_heads * c.head_dim * 4


def test_greedy_tokens_equal_torch_for_16_steps(built):
    files, decoder, llm = built
    assert _tflite_greedy(TFLiteDecoder.from_file(files["fp32"], llm, threads=2), PROMPT, 16) == \
        _torch_greedy(decoder, PROMPT, 16)


def test_int8_dynamic_is_close(built):
    files, decoder, llm = built
    runner = TFLiteDecoder.from_file(files["int8_dynamic"], llm, threads=2)
    c = decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    ref, _, _ = _torch_step(decoder, PROMPT, empty, empty.clone(), [len(PROMPT) - 1])
    got = runner.step(PROMPT, 0, [len(PROMPT) - 1])
    cosine = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cosine > 0.99
