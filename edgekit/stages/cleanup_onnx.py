"""ONNX clean-up stage: fold constants and remove redundant nodes with onnx-simplifier.

onnxsim is the de-facto simplifier that onnx2tf itself relies on; a graph it has simplified is
what onnx2tf converts most reliably, and ORT's quantizer sees fewer nodes to wrap in QDQ.
"""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.errors import ConversionError
from edgekit.stages.base import Stage


class CleanupOnnx(Stage):
    """Simplify, check and shape-infer the exported graph into ``scratch/model.onnx``."""

    name = "cleanup"
    description = "simplifying the ONNX graph"

    def run(self, ctx: BuildContext) -> None:
        import onnx

        model = onnx.load(str(ctx.onnx_path))
        model = self._simplify(model, ctx)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ConversionError(f"the exported ONNX graph is invalid: {str(exc).splitlines()[0][:200]}",
                                  "report this model; try another opset in the profile") from exc
        target = ctx.scratch_dir / "model.onnx"
        onnx.save(model, str(target))
        ctx.onnx_path = target

    @staticmethod
    def _simplify(model, ctx: BuildContext):
        import onnxsim

        try:
            simplified, ok = onnxsim.simplify(model)
        except Exception as exc:  # onnxsim bails out on some custom ops: keep the graph as is
            ctx.reporter.info(f"onnxsim skipped: {type(exc).__name__}: {str(exc)[:120]}")
            return model
        return simplified if ok else model
