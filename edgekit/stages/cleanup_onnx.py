"""ONNX clean-up stage: repair export quirks, fold constants and remove redundant nodes with
onnx-simplifier, and rewrite ops that onnx2tf mishandles into equivalent ones.

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

        from edgekit.quantize.onnx_rewrites import dedupe_value_names, rewrite_for_onnx2tf

        # the dynamo exporter can define a value twice (its aten.embedding output is called
        # "embedding", like a user output of that name): restore SSA form before anything else
        model = dedupe_value_names(onnx.load(str(ctx.onnx_path)))
        model = self._simplify(model, ctx)
        # F.normalize's ReduceL2 breaks onnx2tf: write it as Sqrt(ReduceSum(x*x)), same maths
        model = rewrite_for_onnx2tf(model)
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
