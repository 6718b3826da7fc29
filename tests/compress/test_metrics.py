from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import metrics


class OneHot(nn.Module):
    """Logits that are the one-hot encoding of the (integer-valued) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x.long(), 10).float()


def test_top1_and_cosine() -> None:
    y = torch.arange(10).repeat(3)
    assert metrics.evaluate_top1(OneHot(), y.float(), y) == 1.0
    assert metrics.evaluate_top1(OneHot(), y.float(), (y + 1) % 10) == 0.0
    lin = nn.Linear(4, 3)
    neg = nn.Sequential(lin, nn.Identity())
    x = torch.randn(7, 4)
    assert metrics.output_cosine(lin, neg, x) == pytest.approx(1.0)

    class Negated(nn.Module):
        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor]:
            return (-lin(t),)  # tuple outputs are reduced to their first tensor

    assert metrics.output_cosine(lin, Negated(), x) == pytest.approx(-1.0)


def test_count_params_counts_tied_parameters_once() -> None:
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    model = nn.Sequential(a, b)
    assert metrics.count_params(model) == 2 * (64 + 8)
    b.weight = a.weight
    assert metrics.count_params(model) == 64 + 8 + 8


def test_count_macs_matches_the_formula() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 1, groups=2),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    expected = 64 * 4 * 9 + 64 * 8 * 2 + 512 * 10
    assert metrics._count_macs_hooks(model, (torch.zeros(1, 1, 8, 8),)) == expected
    # Torch-Pruning's counter adds bias adds and ReLUs (1,034 here) to the Conv/Linear MACs.
    assert metrics.count_macs(model, (torch.zeros(1, 1, 8, 8),)) == expected + 256 + 512 + 10 + 256


def test_sparsity_report() -> None:
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        model[0].weight[:5] = 0
    rep = metrics.sparsity_report(model)
    assert rep["layers"] == {"0": 0.5, "1": 0.0}
    assert rep["global"] == 0.25
