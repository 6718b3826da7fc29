"""The ORT mobile format (``.ort``) of every ONNX decoder artifact, when the profile asks for it
(``[llm] ort_format``): the same converter as tensor bundles (``edgekit.stages.ort.to_ort``)."""
from __future__ import annotations

from dataclasses import replace

from edgekit.context import BuildContext
from edgekit.stages.base import Stage
from edgekit.stages.ort import to_ort


class LlmOrtFormat(Stage):
    name = "ort-format"
    description = "converting decoder artifacts to the ORT format"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.profile.llm.ort_format

    def run(self, ctx: BuildContext) -> None:
        for artifact in [a for a in ctx.artifacts if a.format == "onnx"]:
            ort_file = to_ort(ctx, ctx.bundle_dir / artifact.file)
            # the same scheme record, without the baselines: they are measured once, beside the .onnx
            scheme = {k: v for k, v in artifact.quantization.items() if k != "baselines"}
            ctx.artifacts.append(replace(artifact, file=ort_file.name, format="ort", reference_via=artifact.file,
                                         quantization=scheme))
