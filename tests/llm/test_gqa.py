"""The ONNX Runtime form of the KV contract (edgekit.llm.gqa): GroupQueryAttention over per-layer
caches bound as input and output, the same logits as the stacked export, step by step."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from edgekit.errors import ConversionError
from edgekit.llm.export import export_decoder
from edgekit.llm.gqa import ORT_INPUTS, cache_names, to_shared_cache
from edgekit.llm.model import MASKED, load_decoder
from tests.tiny_models import tiny_llama_folder

IDS = [1, 17, 33, 5, 80, 9, 41]
CONTEXT = 64


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def pair(request, tmp_path_factory):
    folder = tiny_llama_folder(tmp_path_factory.mktemp("gqa") / request.param, family=request.param)
    _, decoder = load_decoder(folder, CONTEXT)
    stacked, shared = folder / "stacked.onnx", folder / "shared.onnx"
    export_decoder(decoder, stacked, opset=18)
    shutil.copyfile(stacked, shared)
    to_shared_cache(shared)
    return decoder, stacked, shared


def _full_logits(decoder) -> np.ndarray:
    t, c = len(IDS), decoder.config
    empty = torch.zeros(0, c.layers, c.kv_heads, c.head_dim)
    with torch.no_grad():
        logits, _, _ = decoder(torch.tensor([IDS]), torch.arange(t)[None], torch.triu(torch.full((t, t), MASKED), 1),
                               empty, empty.clone(), torch.arange(t))
    return logits.numpy()


def test_the_graph_has_one_attention_op_per_layer_and_the_per_layer_io(pair):
    import onnx

    decoder, _, shared = pair
    model = onnx.load(str(shared))
    ops = [n.op_type for n in model.graph.node]
    layers = decoder.config.layers
    assert ops.count("GroupQueryAttention") == layers and not {"Attention", "RotaryEmbedding", "Concat"} & set(ops)
    # every norm after a residual add is fused with it: all but the first block's input norm and the
    # final norm (which reads the gathered logit rows)
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * layers - 1 and ops.count("RMSNormalization") == 2
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    assert not [n.name for n in model.graph.node if n.op_type == "RMSNormalization" and producer.get(n.input[0]) == "Add"]
    names = cache_names(layers)
    assert [i.name for i in model.graph.input] == list(ORT_INPUTS) + [p for p, _ in names]
    assert [o.name for o in model.graph.output] == ["logits"] + [q for _, q in names]
    with pytest.raises(ConversionError, match="no Attention node to rewrite"):
        to_shared_cache(shared)  # already rewritten: a clear error, and the file is left as it was
    assert onnx.load(str(shared)) == model


def test_shared_buffers_give_the_one_pass_logits_step_by_step(pair):
    """A 4-token prefill, then one token per step, each step appending in place to the caller's
    buffers: every row's logits equal the stacked graph's single pass over the sequence."""
    import onnxruntime as ort

    decoder, _, shared = pair
    c = decoder.config
    session = ort.InferenceSession(str(shared), providers=["CPUExecutionProvider"])
    buffers = [np.zeros((1, c.kv_heads, CONTEXT, c.head_dim), np.float32) for _ in cache_names(c.layers)]
    values = [ort.OrtValue.ortvalue_from_numpy(b) for b in buffers]
    rows = []
    for start, stop in ((0, 4), (4, 5), (5, 6), (6, 7)):
        binding = session.io_binding()
        feeds = {"input_ids": np.asarray([IDS[start:stop]], np.int64), "seqlens_k": np.asarray([stop - 1], np.int32),
                 "total_sequence_length": np.asarray(stop, np.int32),
                 "logit_positions": np.arange(stop - start, dtype=np.int64)}
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        logits = np.empty((stop - start, c.vocab), np.float32)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        for (past, present), value in zip(cache_names(c.layers), values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        session.run_with_iobinding(binding)
        rows.append(logits)
    assert np.abs(np.concatenate(rows) - _full_logits(decoder)).max() < 1e-4
    assert buffers[0][:, :, :len(IDS)].any() and not buffers[0][:, :, len(IDS):].any()  # appended in place, no further
