"""Accuracy stage: task quality of the reference and of every artifact on held-out data.

classification: top-1 on the labelled ``eval`` split. embedding: per-sentence cosine (mean, min)
of each artifact's embeddings to the reference model's, on held-out sentences never used for
calibration. lm: perplexity on held-out token windows and next-token agreement with the reference.
"""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.options import QualitySplit
from edgekit.stages.base import Stage
from edgekit.stages.calibrate import reference_outputs
from edgekit.stages.verify import reference_source
from edgekit.verify import metrics
from edgekit.verify.hostrun import open_session


def _artifact_outputs(ctx: BuildContext, samples: dict) -> dict:
    """Each artifact's outputs by the arithmetic its verdict used (Verify ran first): quality is
    a property of the artifact on its target, not of this host's int8 kernels."""
    first = ctx.outputs[0].name
    outputs = {}
    for artifact in ctx.artifacts:
        reference = artifact.verification.get("semantics") == "reference"
        file, fmt = reference_source(artifact) if reference else (artifact.file, artifact.format)
        session = open_session(ctx.bundle_dir / file, fmt, ctx.inputs, ctx.outputs, threads=1, reference=reference)
        outputs[artifact.file] = session.run_batch(samples)[first]
    return outputs


def _eval_part(ctx: BuildContext) -> tuple[dict, object, str]:
    """The eval samples, labels and split label of ``options.quality_split``
    (:meth:`QualitySplit.take`)."""
    cal, part = ctx.calibration, QualitySplit(ctx.options.quality_split)
    name = "eval" if ctx.task == "classification" else "heldout"
    source = cal.eval
    if source is None:  # a model without a task, on a set without an eval split
        source, name = cal.verification, "verification"
    label = name if part is QualitySplit.ALL else f"{name}[{part.value}]"
    return {k: part.take(v) for k, v in source.items()}, part.take(cal.eval_labels), label


class Evaluate(Stage):
    """Fill ``ctx.accuracy`` for classifiers, embedding models and causal language models; a
    model without a task (a detector, random weights) gets the cosine of its outputs to the
    reference's, on the eval split or else the verification one (``output_cosine``), which is
    what ``edgekit search --min-cosine`` bounds."""

    name = "evaluate"
    description = "measuring task quality on held-out data"

    def applies(self, ctx: BuildContext) -> bool:
        cal = ctx.calibration
        if ctx.task == "classification":
            return cal.eval is not None and cal.eval_labels is not None
        if ctx.task is None:
            return cal.eval is not None or cal.verification is not None
        return ctx.task in ("embedding", "lm") and cal.eval is not None

    def run(self, ctx: BuildContext) -> None:
        samples, labels, split = _eval_part(ctx)
        reference = reference_outputs(ctx, samples)[ctx.outputs[0].name]
        outputs = _artifact_outputs(ctx, samples)
        base = {"dataset": f"{ctx.calibration.name}:{split}", "samples": len(reference)}
        ctx.accuracy = {**_quality(ctx, reference, outputs, samples, labels), **base}
        if ctx.original is not None:  # compressed: the artifacts against the model the user gave, too
            original = reference_outputs(ctx, samples, ctx.original)[ctx.outputs[0].name]
            ctx.accuracy["original"] = _quality(ctx, original, outputs, samples, labels)


def _quality(ctx: BuildContext, reference, outputs: dict, samples: dict, labels) -> dict:
    """The task quality of ``reference`` outputs and each artifact's ``outputs``: top-1
    (classifiers), mean and min cosine to the reference (embeddings, models without a task), perplexity and next-token
    agreement (language models)."""
    if ctx.task == "classification":
        return {"metric": "top1", "reference": metrics.top1(reference, labels),
                "per_artifact": {f: metrics.top1(y, labels) for f, y in outputs.items()}}
    if ctx.task in ("embedding", None):
        cosines = {f: metrics.per_sample_cosine(reference, y) for f, y in outputs.items()}
        return {"metric": "embedding_cosine" if ctx.task else "output_cosine", "reference": 1.0,
                "per_artifact": {f: float(c.mean()) for f, c in cosines.items()},
                "min_per_artifact": {f: float(c.min()) for f, c in cosines.items()}}
    tokens = samples[ctx.inputs[0].name]
    ppl = metrics.causal_lm_perplexity(reference, tokens)
    per = {f: metrics.causal_lm_perplexity(y, tokens) for f, y in outputs.items()}
    return {"metric": "perplexity", "reference": ppl, "per_artifact": per,
            "perplexity_delta": {f: p / ppl - 1 for f, p in per.items()},
            "next_token_agreement": {f: metrics.next_token_agreement(reference, y) for f, y in outputs.items()}}
