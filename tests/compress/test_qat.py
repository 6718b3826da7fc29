from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import qat, qdq_export
from edgekit.compress.data import TrainData
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import evaluate_top1, output_cosine
from edgekit.compress.qat import QatOptions

from .conftest import TinyCNN

EX = (torch.zeros(1, 1, 8, 8),)


@pytest.fixture(scope="module")
def qat_model(trained_cnn: TinyCNN, digits: TrainData) -> tuple[nn.Module, dict]:
    return qat.apply(trained_cnn, QatOptions(epochs=2), digits)


def _accuracy(path: Path, data: TrainData) -> float:
    out = qdq_export.run_onnx(path, data.x_eval.numpy())
    return float((out.argmax(1) == data.y_eval.numpy()).mean())


def _ptq(float_model: nn.Module, data: TrainData, tmp: Path) -> Path:
    """ORT static QDQ, per-channel int8 weights, int8 activations, same calibration inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(data.x_train[:256].numpy()[:, None])

        def get_next(self) -> dict | None:
            return {"input": b} if (b := next(self.batches, None)) is not None else None

    torch.onnx.export(float_model.eval(), EX, str(tmp / "f32.onnx"), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})
    quant_pre_process(str(tmp / "f32.onnx"), str(tmp / "f32p.onnx"))
    quantize_static(str(tmp / "f32p.onnx"), str(tmp / "ptq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return tmp / "ptq.onnx"


def test_fusable_groups(trained_cnn: TinyCNN) -> None:
    assert qat.fusable_groups(trained_cnn) == [
        ["features.0", "features.1", "features.2"], ["features.3", "features.4", "features.5"],
        ["features.7", "features.8", "features.9"]]


def test_qat_onnx_runs_int8_kernels_and_matches_ptq(qat_model, trained_cnn, digits, tmp_path) -> None:
    model, rep = qat_model
    path = qdq_export.export_qdq_onnx(model, EX, tmp_path / "qat.onnx")
    kernels = qdq_export.ort_kernel_counts(path)
    assert kernels["QLinearConv"] == 3 and kernels["QGemm"] == 1  # every conv/linear in int8
    assert "Conv" not in kernels and "Gemm" not in kernels
    qat_acc = _accuracy(path, digits)
    ptq_acc = _accuracy(_ptq(trained_cnn, digits, tmp_path), digits)
    float_acc = evaluate_top1(trained_cnn, digits.x_eval, digits.y_eval)
    assert qat_acc >= ptq_acc - 0.003  # measured: equal here; 1-sample margin across CPUs
    assert qat_acc >= float_acc - 0.01
    torch_out = model(digits.x_eval).detach().numpy()
    ort_out = qdq_export.run_onnx(path, digits.x_eval.numpy())
    assert (torch_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.99  # fake-quant == int8 run
    assert rep["top1_fake_quant"] == pytest.approx(evaluate_top1(model, digits.x_eval, digits.y_eval))


def test_weights_are_stored_as_int8(qat_model, tmp_path) -> None:
    import onnx
    from onnx import TensorProto

    path = qdq_export.export_qdq_onnx(qat_model[0], EX, tmp_path / "qat.onnx")
    inits = onnx.load(str(path)).graph.initializer
    big = [i for i in inits if len(i.dims) >= 2]
    assert len(big) == 4 and all(i.data_type == TensorProto.INT8 for i in big)
    unfolded = qdq_export.export_qdq_onnx(qat_model[0], EX, tmp_path / "raw.onnx", fold_weights=False)
    assert path.stat().st_size < 0.4 * unfolded.stat().st_size


@pytest.mark.parametrize("signed, per_channel", [(True, False), (False, True)])
def test_signedness_and_per_channel_options(trained_cnn, digits, tmp_path, signed, per_channel) -> None:
    import onnx
    from onnx import TensorProto, numpy_helper

    small = TrainData(digits.x_train[:128], digits.y_train[:128])
    model, _ = qat.apply(trained_cnn, QatOptions(activation_signed=signed, per_channel=per_channel), small)
    graph = onnx.load(str(qdq_export.export_qdq_onnx(model, EX, tmp_path / "q.onnx"))).graph
    inits = {i.name: i for i in graph.initializer}
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear")  # the model input
    assert inits[first_q.input[2]].data_type == (TensorProto.INT8 if signed else TensorProto.UINT8)
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and len(inits[n.input[0]].dims) >= 2]
    sizes = {numpy_helper.to_array(inits[n.input[1]]).size for n in weight_dq}
    assert (sizes == {1}) is (not per_channel)


def test_to_float_gives_a_plain_model_on_the_int8_grid(qat_model, digits) -> None:
    model, _ = qat_model
    flt = qat.to_float(model)
    names = {type(m).__name__ for m in flt.modules()}
    assert not names & {"FakeQuantize", "QuantStub", "MovingAverageMinMaxObserver"}
    assert "BatchNorm2d" not in names  # folded
    assert output_cosine(flt, model, digits.x_eval) > 0.99
    conv = flt.features[0][0]
    scale = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / 127.5
    steps = (conv.weight.detach() / scale).numpy()
    assert np.abs(steps - np.round(steps)).max() < 0.51  # quantized values, not free floats


def test_qat_rejects_bad_inputs(trained_cnn, digits) -> None:
    with pytest.raises(RecipeError, match="qat needs data to calibrate and fine-tune"):
        qat.apply(trained_cnn, QatOptions(), None)
    with pytest.raises(RecipeError, match="qat needs float model inputs"):
        qat.validate(QatOptions(), nn.Embedding(10, 4), TrainData(torch.zeros(4, 3, dtype=torch.long)))
    with pytest.raises(RecipeError, match="qat: epochs=0 must be >= 1"):
        QatOptions(epochs=0)
