"""Fixtures for the compression tests: the real digits task and tiny models defined here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress.data import TrainData

torch.set_num_threads(1)


def digits_split(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits as Nx1x8x8 float32 in [0, 1], fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = int(0.8 * len(x))
    return x[order[:n]], y[order[:n]], x[order[n:]], y[order[n:]]


class TinyCNN(nn.Module):
    """Conv-BN-ReLU x3 (with a max-pool), global average pool, Linear classifier."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DeepCNN(nn.Module):
    """A stem, ``n`` shape-preserving conv blocks in an nn.Sequential, and a head."""

    def __init__(self, c: int = 16, n: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
            for _ in range(n)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def train(model: nn.Module, data: TrainData, epochs: int, lr: float = 1e-2) -> nn.Module:
    """Plain supervised training through the library's own seeded loop."""
    from edgekit.compress.training import fit, supervised_loss

    torch.manual_seed(0)
    fit(model, data, epochs=epochs, lr=lr, loss_fn=supervised_loss(data.resolved_task))
    return model.eval()


@pytest.fixture(scope="session")
def digits() -> TrainData:
    return TrainData(*digits_split())


@pytest.fixture(scope="session")
def trained_cnn(digits: TrainData) -> TinyCNN:
    torch.manual_seed(0)
    return train(TinyCNN(), digits, epochs=8)


@pytest.fixture(scope="session")
def trained_deep(digits: TrainData) -> DeepCNN:
    torch.manual_seed(0)
    return train(DeepCNN(), digits, epochs=8)
