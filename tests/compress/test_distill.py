from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import distill
from edgekit.compress.data import TrainData
from edgekit.compress.distill import DistillOptions, derive_student_by_depth, feature_adapter
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import count_params, evaluate_top1, output_cosine

from .conftest import DeepCNN

EX = (torch.zeros(1, 1, 8, 8),)


def test_depth_student_drops_alternate_blocks_and_keeps_names(trained_deep: DeepCNN) -> None:
    student = derive_student_by_depth(trained_deep, "alternate", example_inputs=EX)
    assert list(dict(student.blocks.named_children())) == ["0", "2"]
    assert len(trained_deep.blocks) == 4  # deep copy: the teacher is untouched
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert torch.equal(student.blocks[1][0].weight, trained_deep.blocks[2][0].weight)
    plan = distill.depth_plan(trained_deep, [0, 3], example_inputs=EX)
    assert plan == {"container": "blocks", "blocks": 4, "dropped": [1, 2]}


def test_depth_student_refuses_shape_changing_blocks() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    with pytest.raises(RecipeError, match=r"blocks \[0\] of '' change the tensor shape"):
        derive_student_by_depth(model, [1, 2, 3, 4, 5], example_inputs=EX)
    assert len(derive_student_by_depth(model, [0, 2, 4, 5], example_inputs=EX)) == 4
    with pytest.raises(RecipeError, match="keep_blocks \\[9\\] out of range"):
        derive_student_by_depth(model, [9], example_inputs=EX)
    with pytest.raises(RecipeError, match="no nn.Sequential/nn.ModuleList with at least two"):
        derive_student_by_depth(nn.Sequential(nn.Linear(64, 10)), example_inputs=(torch.zeros(1, 64),))


def test_feature_adapters() -> None:
    assert isinstance(feature_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 8, 4, 4])), nn.Identity)
    conv = feature_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 16, 4, 4]))
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels, conv.kernel_size) == (8, 16, (1, 1))
    lin = feature_adapter(torch.Size([2, 5, 32]), torch.Size([2, 5, 64]))
    assert isinstance(lin, nn.Linear) and (lin.in_features, lin.out_features) == (32, 64)
    with pytest.raises(RecipeError, match="cannot map features"):
        feature_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 8, 2, 2]))


def test_half_depth_student_recovers_the_gap(trained_deep: DeepCNN, digits: TrainData) -> None:
    teacher_acc = evaluate_top1(trained_deep, digits.x_eval, digits.y_eval)
    cut = derive_student_by_depth(trained_deep, example_inputs=EX)
    cut_acc = evaluate_top1(cut, digits.x_eval, digits.y_eval)
    opts = DistillOptions(epochs=6, lr=1e-2, student="depth")
    student, rep = distill.apply(trained_deep, opts, digits, teacher=trained_deep)
    acc = evaluate_top1(student, digits.x_eval, digits.y_eval)
    assert rep["student"]["dropped"] == [1, 3]
    assert count_params(student) < 0.6 * count_params(trained_deep)
    assert teacher_acc - cut_acc > 0.3  # dropping blocks really hurts before training
    assert (acc - cut_acc) / (teacher_acc - cut_acc) >= 0.9
    assert rep["loss"][-1] < rep["loss"][0]


def test_unlabelled_data_and_feature_mapping_with_adapter(trained_deep: DeepCNN, digits: TrainData) -> None:
    calib = TrainData(digits.x_train, x_eval=digits.x_eval)  # no labels: teacher only
    opts = DistillOptions(epochs=6, lr=1e-2, student="width", width_ratio=0.5,
                          features=(("blocks.3", "blocks.3"),))
    student, rep = distill.apply(trained_deep, opts, calib)
    assert rep["adapters"] == {"blocks.3": "Conv2d"}  # 8 -> 16 channels needs a 1x1 conv
    assert student.blocks[3][0].out_channels == 8
    assert rep["loss"][-1] < rep["loss"][0]
    assert evaluate_top1(student, digits.x_eval, digits.y_eval) > 0.9
    assert not any(m._forward_hooks for m in student.modules())  # feature hooks removed


def test_embedding_outputs_use_mse_or_cosine() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))
    student = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8))
    data = TrainData.from_calibration(torch.randn(256, 16))
    before = output_cosine(student, teacher, data.x_train)
    for loss in ("mse", "cosine"):
        out, rep = distill.apply(student, DistillOptions(epochs=20, lr=1e-2, output_loss=loss), data,
                                 teacher=teacher)
        assert output_cosine(out, teacher, data.x_train) > max(before, 0.8), loss


def test_distill_rejects_missing_inputs(trained_deep: DeepCNN, digits: TrainData) -> None:
    with pytest.raises(RecipeError, match="distill needs data"):
        distill.apply(trained_deep, DistillOptions(), None, teacher=trained_deep)
    with pytest.raises(RecipeError, match="distill needs a teacher"):
        distill.apply(trained_deep, DistillOptions(), digits)
    with pytest.raises(RecipeError, match="feature teacher module 'nope' not found"):
        distill.apply(trained_deep, DistillOptions(features=(("blocks.0", "nope"),)), digits,
                      teacher=trained_deep)
    with pytest.raises(RecipeError, match="epochs=0 must be >= 1"):
        DistillOptions(epochs=0)
    with pytest.raises(RecipeError, match="student='tiny' is not one of"):
        DistillOptions(student="tiny")


class ListNet(nn.Module):
    """Blocks in a named nn.ModuleList, run by a loop in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.layers = nn.ModuleList([nn.Linear(16, 16) for _ in range(5)])
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.out(h)


def test_depth_student_from_a_module_list() -> None:
    model = ListNet()
    student = derive_student_by_depth(model, example_inputs=(torch.zeros(1, 8),))
    assert isinstance(student.layers, nn.ModuleList) and len(student.layers) == 3
    assert torch.equal(student.layers[1].weight, model.layers[2].weight)
    assert student(torch.zeros(4, 8)).shape == (4, 2)
    kept = derive_student_by_depth(model, [0, 4], example_inputs=(torch.zeros(1, 8),), container="layers")
    assert len(kept.layers) == 2
    with pytest.raises(RecipeError, match="'blocks' is not an nn.Sequential/nn.ModuleList"):
        derive_student_by_depth(model, example_inputs=(torch.zeros(1, 8),), container="blocks")
