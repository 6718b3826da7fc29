"""Per-layer int8 sensitivity, when asked (``BuildOptions.sensitivity``; ``edgekit search``'s
default build asks): each weight layer quantized alone with the profile's ORT int8 scheme and
compared with the float graph on the verification samples (:mod:`edgekit.verify.sensitivity`).
Recorded as the manifest's ``sensitivity``."""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.stages.base import Stage
from edgekit.targets import Precision


class LayerSensitivity(Stage):
    name = "sensitivity"
    description = "measuring per-layer int8 sensitivity"

    def applies(self, ctx: BuildContext) -> bool:
        ort = ctx.profile.ort
        return ctx.options.sensitivity and ort.enabled and Precision.INT8 in ort.precisions and not ctx.token_inputs

    def run(self, ctx: BuildContext) -> None:
        from edgekit.verify.hostrun import ORTSession
        from edgekit.verify.sensitivity import layer_sensitivity

        def outputs(path):
            # reference semantics: the device's arithmetic, not this host's int8 kernels
            return ORTSession(path, ctx.inputs, ctx.outputs, threads=1, reference=True).run_batch(ctx.calibration.verification)

        scheme = ctx.profile.ort.int8
        rows = layer_sensitivity(ctx.onnx_path, ctx.calibration.calibration, scheme, ctx.scratch_dir, outputs,
                                 progress=ctx.reporter.info)
        ctx.sensitivity = {"scheme": {"activation_type": scheme.activation_type.value, "weight_type": scheme.weight_type.value,
                                      "per_channel": scheme.per_channel, "calibrate_method": scheme.calibrate_method},
                           "compared_on": f"{ctx.calibration.name}:verification", "semantics": "reference", "layers": rows}
