"""Per-layer int8 sensitivity on a tiny MLP whose middle layer has one weight 500x its others: with
per-tensor weights that layer loses its resolution when quantized alone, so it must rank first;
the float graph against itself is exact."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekit.targets import ORTInt8
from edgekit.verify.sensitivity import layer_sensitivity

from tiny_models import ort_outputs


def _mlp(path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        model[2].weight[0, 0] = 500 * model[2].weight.abs().max()  # one outlier: per-tensor int8 steps of ~4x the rest
    torch.onnx.export(model, (torch.zeros(1, 16),), str(path), dynamo=True, external_data=False, input_names=["x"],
                      output_names=["y"])


def test_the_layer_with_an_outlier_is_the_most_sensitive(tmp_path):
    _mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(0)
    calibration = {"x": rng.standard_normal((32, 1, 16)).astype(np.float32)}
    held_out = {"x": rng.standard_normal((24, 1, 16)).astype(np.float32)}
    seen = []

    def run(path):
        seen.append(path.name)
        return {"y": ort_outputs(path, held_out, reference=True)}  # as the LayerSensitivity stage judges

    rows = layer_sensitivity(tmp_path / "mlp.onnx", calibration, ORTInt8(per_channel=False), tmp_path, run)
    assert len(rows) == 3 and {r["op"] for r in rows} <= {"Gemm", "MatMul"}
    assert seen[0].startswith("ort_preprocessed_") and len(seen) == 4  # the float graph, then one per layer
    worst, *others = rows
    # the outlier's layer first (the one after it is hit too: the outlier widens its input range)
    assert worst["node"] == "node_linear_1" and worst["loss"] > 3 * max(r["loss"] for r in others), rows
    assert worst["top1_agreement"] < others[-1]["top1_agreement"] == 1.0
    assert all(0.0 <= r["loss"] < 1.0 and abs(r["cosine"] - (1 - r["loss"])) < 1e-6 for r in rows)
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
