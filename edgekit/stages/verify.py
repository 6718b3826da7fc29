"""Verification stage: every artifact, run by its real runtime, against the reference model.

Tolerances come from the profile per precision. ``max_rel_err`` is turned into an absolute
bound here (relative to the largest reference output) so the manifest, and the device runner
that reads it, carry plain absolute numbers.
"""
from __future__ import annotations

from edgekit import metrics
from edgekit.context import Artifact, BuildContext
from edgekit.errors import VerificationError
from edgekit.hostrun import open_session
from edgekit.stages.base import Stage


def absolute_tolerance(ctx: BuildContext, precision: str) -> dict:
    tol = ctx.profile.tolerance_for(precision)
    scale = max(float(max(abs(v).max() for v in ctx.reference.values())), 1e-6)
    out = {"max_abs_err": tol.max_rel_err * scale if tol.max_rel_err is not None else None,
           "min_cosine": tol.min_cosine}
    if ctx.task == "classification":
        out["min_top1_agreement"] = tol.min_top1_agreement
    return out


def failures(result: dict, tolerance: dict) -> list[str]:
    """Human-readable list of the bounds ``result`` breaks."""
    broken = []
    if tolerance.get("max_abs_err") is not None and result["max_abs_err"] > tolerance["max_abs_err"]:
        broken.append(f"max abs err {result['max_abs_err']:.4g} > {tolerance['max_abs_err']:.4g}")
    if tolerance.get("min_cosine") is not None and result["cosine"] < tolerance["min_cosine"]:
        broken.append(f"cosine {result['cosine']:.6f} < {tolerance['min_cosine']}")
    bound = tolerance.get("min_top1_agreement")
    if bound is not None and result.get("top1_agreement", 1.0) < bound:
        broken.append(f"top-1 agreement {result['top1_agreement']:.3f} < {bound}")
    return broken


class Verify(Stage):
    """Compare each artifact's outputs with the reference on the held-out samples."""

    name = "verify"
    description = "verifying artifacts against the reference"

    def run(self, ctx: BuildContext) -> None:
        problems = []
        for artifact in ctx.artifacts:
            broken = self._verify(ctx, artifact)
            if broken:
                problems.append(f"{artifact.file}: {'; '.join(broken)}")
        if problems and not ctx.options.allow_drift:
            raise VerificationError("verification failed: " + " | ".join(problems),
                                    "loosen the profile's [tolerance] or pass --allow-drift to keep the artifacts")
        for problem in problems:
            ctx.reporter.info(f"drift allowed: {problem}")

    @staticmethod
    def _verify(ctx: BuildContext, artifact: Artifact) -> list[str]:
        session = open_session(ctx.bundle_dir / artifact.file, artifact.format, ctx.inputs, ctx.outputs, threads=1)
        actual = session.run_batch(ctx.calibration.verification)
        result = metrics.compare(ctx.reference, actual, ctx.task == "classification")
        artifact.tolerance = absolute_tolerance(ctx, artifact.precision)
        broken = failures(result, artifact.tolerance)
        artifact.verification = {**result, "samples": len(next(iter(actual.values()))), "passed": not broken}
        return broken
