"""The exportable decoder: same logits as transformers, the same through ONNX Runtime, and the
KV contract (prefill then decode equals one pass over the whole sequence)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.llm.export import ExportShapes, export_decoder
from edgekit.llm.model import MASKED, DecoderConfig, load_decoder
from edgekit.llm.source import LlmSourceError, check_folder, resolve
from tests.tiny_models import tiny_llama_folder

IDS = [1, 17, 33, 5, 80, 9, 41]


def _full_pass(decoder, ids):
    t = len(ids)
    c = decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    with torch.no_grad():
        return decoder(torch.tensor([ids]), torch.arange(t)[None], torch.triu(torch.full((t, t), MASKED), 1), empty,
                       empty, torch.arange(t))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("fused", [True, False])
def test_decoder_matches_transformers(tmp_path, family, fused):
    from transformers import AutoModelForCausalLM

    folder = tiny_llama_folder(tmp_path / family, family=family)
    _, decoder = load_decoder(folder, 64)
    decoder.fused = fused
    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(torch.tensor([IDS])).logits[0]
    logits, _, _ = _full_pass(decoder, IDS)
    assert torch.allclose(logits, reference, atol=1e-4), (logits - reference).abs().max()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    folder = tiny_llama_folder(tmp_path_factory.mktemp("llm") / "tiny")
    _, decoder = load_decoder(folder, 64)
    path = folder / "decoder.onnx"
    export_decoder(decoder, path, opset=18)
    return decoder, path


def test_onnx_prefill_then_decode_equals_one_pass(tiny_onnx):
    import onnxruntime as ort

    decoder, path = tiny_onnx
    c = decoder.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    full, _, _ = _full_pass(decoder, IDS)
    cache = np.zeros((2, len(IDS), c.layers, c.kv_heads, c.head_dim), np.float32)
    rows = []
    for start, stop in ((0, 4), (4, 5), (5, 6), (6, 7)):  # a 4-token prefill, then one token per step
        t = stop - start
        bias = np.zeros((t, stop), np.float32)
        bias[:, start:] = np.triu(np.full((t, t), MASKED, np.float32), 1)
        logits, key, value = session.run(None, {
            "input_ids": np.array([IDS[start:stop]]), "position_ids": np.arange(start, stop)[None], "attention_bias": bias,
            "past_key": cache[0, :start], "past_value": cache[1, :start], "logit_positions": np.arange(t)})
        cache[0, start:stop], cache[1, start:stop] = key, value
        rows.append(logits)
    np.testing.assert_allclose(np.concatenate(rows), full.numpy(), atol=2e-4)


def test_fused_graph_uses_the_opset_23_ops(tiny_onnx):
    import onnx

    ops = {n.op_type for n in onnx.load(str(tiny_onnx[1])).graph.node}
    assert {"RMSNormalization", "RotaryEmbedding", "Attention"} <= ops and "Softmax" not in ops


def test_static_portable_export_has_fixed_shapes(tmp_path, tiny_onnx):
    import onnx

    decoder, _ = tiny_onnx
    path = tmp_path / "static.onnx"
    export_decoder(decoder, path, opset=18, shapes=ExportShapes(tokens=1, past=63, logits=1, dynamic=False), fused=False)
    model = onnx.load(str(path))
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["past_key"] == [63, 2, 2, 16] and dims["input_ids"] == [1, 1]
    assert "Attention" not in {n.op_type for n in model.graph.node}


def test_config_reads_gemma_specifics():
    config = DecoderConfig.from_hf({"model_type": "gemma", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
                                    "intermediate_size": 32})
    assert config.tied and config.act == "gelu_tanh" and config.norm_offset == 1.0 and config.embed_scale == 4.0


def test_unsupported_rope_is_refused():
    with pytest.raises(LlmSourceError, match="rope_type 'llama3'"):
        DecoderConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 32,
                               "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}})


def test_bad_folders_are_refused_before_any_work(tmp_path):
    with pytest.raises(LlmSourceError, match="no config.json"):
        check_folder(tmp_path)
    folder = tiny_llama_folder(tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(LlmSourceError, match="pickle checkpoints are never loaded"):
        check_folder(folder)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(LlmSourceError, match="model_type 'bert' is not supported"):
        check_folder(folder)
    with pytest.raises(LlmSourceError, match="not a Hugging Face model folder"):
        resolve(tmp_path / "nothing.txt")
