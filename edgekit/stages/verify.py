"""Verification stage: every artifact, against the reference model, by its target's arithmetic.

Tolerances come from the profile per precision, made absolute by ``edgekit.verify.rule`` (the
home of the tolerance rule and verdict semantics) so the manifest, and the device runner that
reads it, carry plain absolute numbers.

Which arithmetic judges (``edgekit.verify.rule.semantics``, one rule for build and device): this
host's kernels when it computes like the target (same architecture and CPU features; TFLite
always), else ONNX Runtime's reference semantics (QDQ as float, integer ops emulated exactly).
Why: an x86 CPU without VNNI saturates in ORT's u8s8 kernels where the ARM target does not, and
a verdict must not depend on the build host. The host's own kernel figures are kept beside a
reference verdict, labelled with the host's int8 ISA, and not judged.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from edgekit.context import Artifact, BuildContext
from edgekit.errors import ConversionError, VerificationError
from edgekit.stages.base import Stage
from edgekit.verify.hostrun import open_session
from edgekit.verify.rule import absolute_tolerance, broken_bounds, compare, int8_isa, semantics


def device_facts(ctx: BuildContext) -> dict:
    """The part of the manifest that says which CPU the bundle is for (all ``semantics`` reads)."""
    return {"device": asdict(ctx.profile.device)}


def reference_source(artifact: Artifact) -> tuple[str, str]:
    """The bundle file (and its format) whose reference run judges ``artifact`` off-target: an
    ``.ort`` is judged through the ``.onnx`` it was converted from."""
    file = artifact.reference_via or artifact.file
    return file, ("onnx" if file.endswith(".onnx") else artifact.format)


def run_artifact(ctx: BuildContext, file: str, fmt: str, reference: bool = False) -> dict[str, np.ndarray]:
    """Outputs of one bundle file on the verification samples; a runtime failure is the
    converter's (exit 3), named with the artifact, never a traceback."""
    try:
        session = open_session(ctx.bundle_dir / file, fmt, ctx.inputs, ctx.outputs, threads=1, reference=reference)
        return session.run_batch(ctx.calibration.verification)
    except Exception as exc:  # the runtimes raise RuntimeError, Fail, InvalidGraph, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"{file} does not run in {'onnxruntime' if fmt != 'tflite' else 'LiteRT'}: {first}",
                              "run `edgekit inspect` on the model for unsupported ops, or disable that precision in the profile") from None


def settle(ctx: BuildContext, broken: dict[str, list[str]], table: str) -> None:
    """The build's rule for failed verdicts (tensor and LLM bundles alike): stop with every
    problem named, or, with ``--allow-drift``, keep the artifacts and say what drifted."""
    problems = [f"{file}: {'; '.join(items)}" for file, items in broken.items() if items]
    if problems and not ctx.options.allow_drift:
        raise VerificationError("verification failed: " + " | ".join(problems),
                                f"loosen the profile's {table} or pass --allow-drift to keep the artifacts")
    for problem in problems:
        ctx.reporter.info(f"drift allowed: {problem}")


class Verify(Stage):
    """Compare each artifact's outputs with the reference on the held-out samples."""

    name = "verify"
    description = "verifying artifacts against the reference"

    def run(self, ctx: BuildContext) -> None:
        settle(ctx, {artifact.file: self._verify(ctx, artifact) for artifact in ctx.artifacts}, "[tolerance]")

    @staticmethod
    def _verify(ctx: BuildContext, artifact: Artifact) -> list[str]:
        classification = ctx.task == "classification"
        artifact.tolerance = absolute_tolerance(ctx.profile.tolerance_for(artifact.precision), ctx.reference, classification)
        outputs = run_artifact(ctx, artifact.file, artifact.format)
        host = compare(outputs, ctx.reference, classification)
        how = semantics(device_facts(ctx), asdict(artifact))
        result, broken = host, broken_bounds(host, artifact.tolerance)
        if how == "reference":
            artifact.host_kernels = {**host, "isa": int8_isa(), "passed": not broken, "judged": False}
            result, broken = _reference(ctx, artifact, outputs)
        samples = len(next(iter(ctx.calibration.verification.values())))
        artifact.verification = {**result, "samples": samples, "semantics": how,
                                 "isa": int8_isa() if how == "kernels" else None, "passed": not broken}
        return broken


def _reference(ctx: BuildContext, artifact: Artifact, outputs: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    """The reference-semantics verdict. An ``.ort`` holds ops fused at conversion (QLinearConv,
    QGemm), which BASIC cannot undo, so it is judged through the ``.onnx`` it was converted from.
    How far its own fused kernels are from that file on this host is reported, not judged: fused
    integer ops requantize between ops where the QDQ graph stays float, so the two legitimately
    differ by rounding (measured 0.18 on a small ViT with nnapi's U8U8 scheme), and judging the fused
    kernels here would make the verdict depend on this host's CPU again."""
    classification = ctx.task == "classification"
    source, fmt = reference_source(artifact)
    result = compare(run_artifact(ctx, source, fmt, reference=True), ctx.reference, classification)
    broken = broken_bounds(result, artifact.tolerance)
    if source != artifact.file:
        twin = run_artifact(ctx, source, fmt)
        gap = max(float(np.max(np.abs(twin[k].astype(np.float64) - outputs[k]))) for k in outputs)
        result = {**result, "reference_file": source, "max_abs_diff_to_reference_file": gap}
    return result, broken
