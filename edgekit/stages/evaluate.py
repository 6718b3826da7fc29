"""Accuracy stage: task accuracy of the reference and of every artifact on labelled data."""
from __future__ import annotations

from edgekit import metrics
from edgekit.context import BuildContext
from edgekit.hostrun import open_session
from edgekit.stages.base import Stage
from edgekit.stages.calibrate import reference_outputs


class Evaluate(Stage):
    """Top-1 on the calibration set's labelled ``eval`` split, when the model is a classifier."""

    name = "evaluate"
    description = "measuring accuracy on labelled data"

    def applies(self, ctx: BuildContext) -> bool:
        cal = ctx.calibration
        return ctx.task == "classification" and cal.eval is not None and cal.eval_labels is not None

    def run(self, ctx: BuildContext) -> None:
        cal = ctx.calibration
        first = ctx.outputs[0].name
        reference = metrics.top1(reference_outputs(ctx, cal.eval)[first], cal.eval_labels)
        per_artifact = {}
        for artifact in ctx.artifacts:
            session = open_session(ctx.bundle_dir / artifact.file, artifact.format, ctx.inputs, ctx.outputs, threads=1)
            per_artifact[artifact.file] = metrics.top1(session.run_batch(cal.eval)[first], cal.eval_labels)
        ctx.accuracy = {"metric": "top1", "dataset": f"{cal.name}:eval", "samples": int(len(cal.eval_labels)),
                        "reference": reference, "per_artifact": per_artifact}
