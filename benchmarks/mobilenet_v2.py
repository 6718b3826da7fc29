"""MobileNetV2-1.0 (Sandler et al. 2018) at 224x224, defined in code (no torchvision, no download).

Weights are random but seeded and batch-norm statistics are calibrated on the bundled photo set,
so activations have realistic ranges for int8 calibration. Latency does not depend on the
weights' values; accuracy is not measured here.
"""
from __future__ import annotations

import torch
from torch import nn

INPUT_NAMES = ["input"]
OUTPUT_NAMES = ["logits"]
CALIBRATION = "photos"
# No TASK: with random weights the logits have no meaningful top-1, compare them by cosine.


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride) from the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [_conv_bn(3, 32, 3, 2)], 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(_conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def _calibrate_batchnorm(model: nn.Module) -> None:
    """Set BN running statistics from real photos so int8 ranges are realistic."""
    from edgekit.calibration import load_named
    from edgekit.tensors import TensorSpec

    data = load_named("photos", [TensorSpec("input", (1, 3, 224, 224), "float32", "NCHW")])
    x = torch.from_numpy(data.calibration["input"][:, 0])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    model.eval()


def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = MobileNetV2()
    _calibrate_batchnorm(model)
    return model.eval(), (torch.zeros(1, 3, 224, 224),)
