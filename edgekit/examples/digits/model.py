"""DigitsCNN: a tiny conv net for scikit-learn's 8x8 digits, and its shipped weights.

Input ``[1, 1, 8, 8]`` float32 NCHW (raw pixels 0..16 divided by 16), output ``[1, 10]`` logits.
Only Conv2d, ReLU, global average pooling and Linear are used, so the model converts cleanly
through ONNX -> onnx2tf -> TFLite (including full-integer int8). ``factory`` serves model
references of the form ``edgekit/examples/digits/model.py:factory``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = Path(__file__).resolve().with_name("digits_cnn.pt")
# Read by edgekit.modelspec when this module is the model: tensor names, default calibration set
# (calibration_data/digits) and the task (enables top-1 accuracy in the bundle).
INPUT_NAMES = ["input"]
OUTPUT_NAMES = ["logits"]
CALIBRATION = "digits"
TASK = "classification"
INPUT_SHAPE = (1, 1, 8, 8)
NUM_CLASSES = 10


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    # BatchNorm is folded into the conv by the ONNX export, so it costs nothing on the device,
    # and it lets fine-tuning after channel pruning recover quickly.
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Three 3x3 conv+BN+ReLU blocks (32, 64, 128 channels; the last with stride 2), global
    average pool, Linear (~94 k parameters, ~2.4 M MACs).

    Wide enough that compute, not interpreter overhead, dominates its latency, so channel
    pruning shows up in measured latency, and weights dominate its file size, so int8 shows
    its 4x there.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 32),  # 8x8
            *_conv_bn_relu(32, 64),  # 8x8
            *_conv_bn_relu(64, 128, stride=2),  # 4x4
        )
        # Global average pooling instead of flatten: no NCHW/NHWC reshape ambiguity in onnx2tf.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[N, 1, 8, 8]`` images to ``[N, num_classes]`` logits."""
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def example_inputs() -> tuple[torch.Tensor, ...]:
    """One dummy input of the model's shape, for export and tracing."""
    return (torch.zeros(INPUT_SHAPE, dtype=torch.float32),)


def load_model(weights: Path | str | None = None) -> DigitsCNN:
    """The trained model in eval mode, with the shipped (or the given) weights loaded."""
    model = DigitsCNN()
    state = torch.load(weights or WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(model, example_inputs)``, for build references of the form ``model.py:factory``."""
    return load_model(), example_inputs()
