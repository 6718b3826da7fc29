"""A small vision transformer for the image-path tests (a model file, not a test module).

Patch-embedding conv (2x2 patches of an 8x8 digit: 16 tokens of 32), two pre-LayerNorm blocks
with ``nn.MultiheadAttention`` (2 heads) and a GELU MLP, a final LayerNorm, mean pooling and a
linear head. Untrained, its outputs hardly depend on the input (cosine 0.995 to their own mean
on the digits verification samples), so a cosine bound would prove nothing: the tests train it
once per session (:func:`train_weights`, about 10 s, ~90 % top-1 on digits ``eval``) and build it
from a copy of this file with ``vit_weights.npz`` beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

CALIBRATION = "digits"
TASK = "classification"
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits"]
WEIGHTS = "vit_weights.npz"


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 2, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of the bundled digits set as model inputs ``[N, 1, 8, 8]`` in 0..1, and labels."""
    from edgekit.paths import calibration_dir

    with np.load(calibration_dir() / "digits" / "digits.npz", allow_pickle=False) as data:
        x = torch.tensor(data[split] / 16.0, dtype=torch.float32).permute(0, 3, 1, 2)
        return x.contiguous(), torch.tensor(data[f"{split}_labels"])


def train_weights(folder: Path, epochs: int = 12) -> float:
    """Train on digits ``train`` and write ``folder/vit_weights.npz``; return ``eval`` top-1."""
    torch.manual_seed(0)
    model = ViT()
    x, y = digits_split("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 50):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50]).backward()
            optimizer.step()
    np.savez(Path(folder) / WEIGHTS, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    x_eval, y_eval = digits_split("eval")
    with torch.no_grad():
        return float((model(x_eval).argmax(1) == y_eval).float().mean())


def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The trained ViT (weights beside this file) and an example input."""
    model = ViT()
    with np.load(Path(__file__).with_name(WEIGHTS), allow_pickle=False) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return model.eval(), (torch.zeros(1, 1, 8, 8),)
