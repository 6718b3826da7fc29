"""ONNX export stage: ``torch.onnx.export`` with the opset and static shapes of the profile.

:func:`export_model` is the one exporter of a build: this stage writes the shipped graph with it,
and the compression stage measures every step's model with it, so per-step figures (bytes,
latency) describe the graph that ships.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgekit.context import BuildContext
from edgekit.errors import ConversionError
from edgekit.isolated import captured
from edgekit.stages.base import Stage


def export_model(model: Any, ctx: BuildContext, target: Path) -> None:
    """Export ``model`` (a ``torch.nn.Module``) on ``ctx.example_inputs`` to ``target``: one
    self-contained file (no external data), the profile's opset, static shapes, the build's input
    and output names."""
    import torch

    # The dynamo exporter is torch's supported path; it prints progress we do not want in
    # a build log, so its output is captured and shown only when it fails.
    try:
        with captured() as log:
            torch.onnx.export(model, ctx.example_inputs, str(target), dynamo=True, external_data=False,
                              input_names=[s.name for s in ctx.inputs], output_names=[s.name for s in ctx.outputs],
                              opset_version=ctx.profile.export.opset, optimize=True)
    except Exception as exc:
        raise ConversionError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} {log.tail(1)}",
                              "export the model yourself and pass the .onnx file, or simplify unsupported ops") from exc


class ExportOnnx(Stage):
    """Write ``scratch/exported.onnx`` as one self-contained file (no external data)."""

    name = "export"
    description = "exporting to ONNX"

    def run(self, ctx: BuildContext) -> None:
        target = ctx.scratch_dir / "exported.onnx"
        if ctx.model is None:
            shutil.copyfile(ctx.source_onnx, target)
        else:
            export_model(ctx.model, ctx, target)
        ctx.onnx_path = target
