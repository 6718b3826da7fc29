"""Export the decoder once to ONNX (dynamic T/P, the KV contract's stacked form): the graph the
calibration statistics and every quantizer start from; the fp32 artifact is it in the per-layer
ONNX Runtime form (``edgekit.llm.gqa``)."""
from __future__ import annotations

import shutil

from edgekit.context import Artifact, BuildContext
from edgekit.llm.export import export_decoder
from edgekit.llm.gqa import to_shared_cache
from edgekit.stages.base import Stage


class ExportDecoder(Stage):
    name = "export"
    description = "exporting the decoder with its KV cache to ONNX"

    def run(self, ctx: BuildContext) -> None:
        target = ctx.scratch_dir / "decoder_fp32.onnx"
        export_decoder(ctx.llm.decoder, target, opset=ctx.profile.export.opset)
        ctx.llm.onnx_fp32 = target
        if "fp32" in {p.value for p in ctx.profile.llm.ort_precisions}:
            shutil.copyfile(target, ctx.bundle_dir / "model_fp32.onnx")
            to_shared_cache(ctx.bundle_dir / "model_fp32.onnx")
            ctx.artifacts.append(Artifact("model_fp32.onnx", "onnx", "fp32", "onnxruntime",
                                          tolerance=_tolerance(ctx, "fp32")))


def _tolerance(ctx: BuildContext, precision: str) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(ctx.profile.llm.tolerance_for(precision)).items() if v is not None}
