from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from edgekit.compress import lowrank
from edgekit.compress.errors import RecipeError
from edgekit.compress.lowrank import LowRankOptions, RankRule
from edgekit.compress.metrics import count_params


def _rank_k_linear(n_in: int, n_out: int, k: int, seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, k, generator=g) @ torch.randn(k, n_in, generator=g) / k)
    return layer


def test_choose_rank_by_energy_and_ratio() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0])  # energies 9, 4, 1, 1, 1 of 16
    assert lowrank.choose_rank(s, LowRankOptions(value=0.5)) == 1  # 9/16 >= 0.5
    assert lowrank.choose_rank(s, LowRankOptions(value=0.8)) == 2  # 13/16 = 0.8125
    assert lowrank.choose_rank(s, LowRankOptions(value=0.9)) == 4  # 15/16 = 0.9375
    assert lowrank.choose_rank(s, LowRankOptions(rule=RankRule.RATIO, value=0.5)) == 3


def test_low_rank_linear_is_factorized_exactly() -> None:
    model = nn.Sequential(_rank_k_linear(128, 96, k=8), nn.ReLU(), nn.Linear(96, 10))
    out, rep = lowrank.apply(model, LowRankOptions(rule="energy", value=0.99))
    entry = rep["layers"]["0"]
    assert entry["rank"] == 8 and entry["factorized"]
    assert entry["params_after"] == 8 * (128 + 96) + 96 == 1888
    first, second = out[0]
    assert (first.in_features, first.out_features, first.bias) == (128, 8, None)
    assert (second.in_features, second.out_features) == (8, 96)
    x = torch.randn(16, 128)
    assert torch.allclose(out(x), model(x), atol=1e-4)  # rank 8 weights: no error at all
    assert count_params(out) == count_params(model) - entry["params_before"] + entry["params_after"]
    assert isinstance(model[0], nn.Linear)  # input model untouched


def test_layer_without_saving_is_skipped() -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    out, rep = lowrank.apply(model, LowRankOptions(rule="ratio", value=0.5))
    entry = rep["layers"]["0"]
    assert entry["rank"] == 32 and not entry["factorized"]  # 32 * 128 == 64 * 64
    assert "saves nothing" in entry["reason"]
    assert rep["removed_fraction"] == 0.0 and isinstance(out[0], nn.Linear)


def test_pointwise_conv_is_factorized_with_stride() -> None:
    conv = nn.Conv2d(64, 48, 1, stride=2)
    with torch.no_grad():
        conv.weight.copy_(_rank_k_linear(64, 48, k=4).weight[:, :, None, None])
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), conv)
    out, rep = lowrank.apply(model, LowRankOptions(value=0.999))
    assert rep["factorized"] == ["1"]
    assert rep["layers"]["1"]["rank"] == 4
    assert out[1][0].stride == (2, 2) and out[1][1].kernel_size == (1, 1)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(out(x), model(x), atol=1e-4)
    assert "0" not in rep["layers"]  # 3x3 conv: not eligible


def test_energy_bounds_the_approximation_error() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(200, 200, bias=False)
    out, rep = lowrank.apply(nn.Sequential(layer), LowRankOptions(rule="ratio", value=0.25))
    approx = out[0][1].weight @ out[0][0].weight
    rel = (torch.linalg.norm(approx - layer.weight) / torch.linalg.norm(layer.weight)) ** 2
    assert rel.item() == pytest.approx(1 - rep["layers"]["0"]["energy_kept"], abs=1e-4)
    assert rep["removed_fraction"] == pytest.approx(1 - 50 * 400 / 40000)


def test_model_without_linear_layers_is_rejected() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(RecipeError, match="lowrank needs nn.Linear or 1x1 Conv2d layers; this model has none"):
        lowrank.apply(model, LowRankOptions())


@pytest.mark.parametrize("kwargs, message", [
    ({"value": 1.0}, r"energy=1.0 is out of range; give a fraction in \(0, 1\)"),
    ({"rule": "ratio", "value": 0}, "ratio=0 is out of range"),
    ({"rule": "svd"}, "rule='svd' is not 'energy' or 'ratio'"),
])
def test_bad_options_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        LowRankOptions(**kwargs)


def test_unknown_skip_name_is_rejected() -> None:
    with pytest.raises(RecipeError, match="skip names 'fc', which is not a module"):
        lowrank.apply(nn.Sequential(nn.Linear(4, 4)), LowRankOptions(skip=("fc",)))


def test_finetune_recovers_what_factorizing_cost(digits) -> None:
    from edgekit.compress.metrics import evaluate_top1

    from .conftest import train

    torch.manual_seed(0)
    mlp = train(nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                              nn.Linear(128, 10)), digits, epochs=10)
    x, y = digits.eval_split()
    base = evaluate_top1(mlp, x, y)
    options = LowRankOptions(rule="ratio", value=0.05, skip=("5",))  # ranks 4 and 7 (measured: 0.97 -> 0.64)
    cut, report = lowrank.apply(mlp, options, digits)
    tuned, tuned_report = lowrank.apply(mlp, dataclasses.replace(options, finetune_epochs=5), digits)  # 0.91
    assert report["finetune_loss"] == [] and len(tuned_report["finetune_loss"]) == 5
    assert tuned_report["factorized"] == report["factorized"] == ["1", "3"]
    assert evaluate_top1(cut, x, y) < base - 0.2
    assert evaluate_top1(tuned, x, y) > evaluate_top1(cut, x, y) + 0.2
    assert evaluate_top1(tuned, x, y) >= base - 0.08


@pytest.mark.parametrize("epochs", [-1, 1.5, True])
def test_bad_finetune_epochs_are_rejected(epochs) -> None:
    with pytest.raises(RecipeError, match="finetune_epochs"):
        LowRankOptions(finetune_epochs=epochs)


def test_finetune_without_data_is_rejected() -> None:
    with pytest.raises(RecipeError, match="finetune_epochs > 0 needs training data"):
        lowrank.apply(nn.Sequential(nn.Linear(64, 64)), LowRankOptions(finetune_epochs=1), None)
