"""TFLite (LiteRT) decoder artifacts: one ``.tflite`` per precision holding the static ``prefill``
(T = prefill_chunk) and ``decode`` (T = 1) signatures over the whole cache (``edgekit.llm.tflite``,
through onnx2tf), for the precisions the profile's ``[llm] tflite_precisions`` names."""
from __future__ import annotations

from edgekit.context import Artifact, BuildContext
from edgekit.llm.stages.export import _tolerance
from edgekit.llm.tflite import LlmTFLiteOptions, convert_decoder_tflite
from edgekit.stages.base import Stage


class LlmTFLiteConvert(Stage):
    name = "tflite"
    description = "converting the decoder to TFLite (prefill and decode signatures)"

    def applies(self, ctx: BuildContext) -> bool:
        return bool(ctx.profile.llm.tflite_precisions)

    def run(self, ctx: BuildContext) -> None:
        cfg = ctx.profile.llm
        for precision in (p.value for p in cfg.tflite_precisions):
            target = ctx.bundle_dir / f"model_{precision}.tflite"
            options = LlmTFLiteOptions(precision=precision, prefill_chunk=cfg.prefill_chunk, context=cfg.context,
                                       opset=ctx.profile.export.opset)
            convert_decoder_tflite(ctx.llm.source.folder, target, ctx.scratch_dir / "tflite", options=options)
            ctx.artifacts.append(Artifact(target.name, "tflite", precision, "litert", tolerance=_tolerance(ctx, precision)))
