"""Verify every decoder artifact on the golden prompts, by the target's arithmetic.

The verdict rule (greedy tokens matching the original's up to the first difference, first-step
logits cosine, NaN never passes) is the device runner's ``llm_broken_bounds``; the arithmetic is
chosen by the runner's ``semantics``, as for tensor bundles: off-target, ONNX Runtime artifacts
are judged by reference semantics (MatMulNBits at float compute, ``reference_model``) and this
host's kernel figures are reported beside, labelled with its int8 ISA, not judged.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edgekit.context import Artifact, BuildContext
from edgekit.errors import ConversionError
from edgekit.llm.stages.bundle import llm_facts
from edgekit.runner.edgekit_runner import OrtDecoder, TFLiteDecoder, golden_metrics, llm_broken_bounds, reference_model, semantics
from edgekit.stages.base import Stage
from edgekit.stages.verify import device_facts, reference_source, settle
from edgekit.verify.rule import int8_isa

# the ops reference_model rewrites: their arithmetic depends on the CPU's integer kernels
REWRITTEN = frozenset({"MatMulInteger", "MatMulNBits"})


def host_threads(ctx: BuildContext) -> int:
    return ctx.host_threads(ctx.profile.ort.threads)


def open_decoder(ctx: BuildContext, artifact: Artifact, reference: bool) -> Any:
    """The artifact as a runner decoder: its own file on this CPU's kernels, or (``reference``)
    the file that judges it off-target, at reference semantics."""
    file = reference_source(artifact)[0] if reference else artifact.file
    path = ctx.bundle_dir / file
    try:
        if artifact.format == "tflite":  # always judged by the kernels (semantics)
            return TFLiteDecoder.from_file(path, llm_facts(ctx), threads=host_threads(ctx))
        return OrtDecoder.from_file(reference_model(path) if reference else path, llm_facts(ctx), threads=host_threads(ctx))
    except Exception as exc:  # onnxruntime raises Fail, InvalidGraph, RuntimeError ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        runtime = "LiteRT" if artifact.format == "tflite" else "onnxruntime"
        raise ConversionError(f"{file} does not run in {runtime}: {first}",
                              "disable that precision in the profile's [llm] table") from None


def judged_by(ctx: BuildContext, artifact: Artifact) -> str:
    """``kernels`` or ``reference`` (the runner's ``semantics``). Off-target, a graph with nothing
    for the reference to rewrite (fp32: no MatMulInteger or MatMulNBits, see ``reference_model``)
    runs the same either way, so it is judged once, by the kernels."""
    import onnx

    how = semantics(device_facts(ctx), asdict(artifact))
    if how == "reference" and artifact.format != "tflite":
        graph = onnx.load(str(ctx.bundle_dir / reference_source(artifact)[0])).graph
        if not {n.op_type for n in graph.node} & REWRITTEN:
            return "kernels"
    return how


def judging_decoder(ctx: BuildContext, artifact: Artifact) -> Any:
    """The decoder whose figures judged ``artifact`` (for its quality figures): the semantics
    VerifyDecoder recorded, not worked out again (that reads the whole graph)."""
    return open_decoder(ctx, artifact, artifact.verification["semantics"] == "reference")


class VerifyDecoder(Stage):
    name = "verify"
    description = "verifying every artifact's greedy continuations against the original"

    def run(self, ctx: BuildContext) -> None:
        golden = ctx.llm.golden.to_npz()
        settle(ctx, {artifact.file: self._verify(ctx, artifact, golden) for artifact in ctx.artifacts}, "[llm.tolerance]")

    @staticmethod
    def _verify(ctx: BuildContext, artifact: Artifact, golden: dict) -> list[str]:
        how = judged_by(ctx, artifact)
        host = golden_metrics(open_decoder(ctx, artifact, reference=False), golden)
        result = host
        if how == "reference":
            result = golden_metrics(open_decoder(ctx, artifact, reference=True), golden)
            artifact.host_kernels = {**host, "isa": int8_isa(), "passed": not llm_broken_bounds(host, artifact.tolerance),
                                     "judged": False}
        broken = llm_broken_bounds(result, artifact.tolerance)
        artifact.verification = {**result, "passed": not broken, "semantics": how,
                                 **({"isa": int8_isa()} if how == "kernels" else {})}
        return broken
