"""Compression stage: the hook where pruning, low-rank, distillation and QAT run (issue #4).

Until a recipe is given it does nothing, and says so in the manifest's ``compression`` field.
"""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.stages.base import Stage


class Compress(Stage):
    """Apply the compression recipe to the PyTorch model before export."""

    name = "compress"
    description = "compressing the model"

    def applies(self, ctx: BuildContext) -> bool:
        return False  # no recipe options exist yet; ONNX input is never compressed

    def run(self, ctx: BuildContext) -> None:  # pragma: no cover - enabled with recipes
        raise NotImplementedError
