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
    """The eval samples, labels and split label of ``options.quality_split``: all, or the even
    (``search``) or odd (``heldout``) samples, so both halves keep the split's class balance."""
    cal, part = ctx.calibration, QualitySplit(ctx.options.quality_split)
    name = "eval" if ctx.task == "classification" else "heldout"
    if part is QualitySplit.ALL:
        return cal.eval, cal.eval_labels, name
    start = 0 if part is QualitySplit.SEARCH else 1
    labels = None if cal.eval_labels is None else cal.eval_labels[start::2]
    return {k: v[start::2] for k, v in cal.eval.items()}, labels, f"{name}[{part.value}]"


class Evaluate(Stage):
    """Fill ``ctx.accuracy`` for classifiers, embedding models and causal language models."""

    name = "evaluate"
    description = "measuring task quality on held-out data"

    def applies(self, ctx: BuildContext) -> bool:
        cal = ctx.calibration
        if ctx.task == "classification":
            return cal.eval is not None and cal.eval_labels is not None
        return ctx.task in ("embedding", "lm") and cal.eval is not None

    def run(self, ctx: BuildContext) -> None:
        cal = ctx.calibration
        samples, labels, split = _eval_part(ctx)
        reference = reference_outputs(ctx, samples)[ctx.outputs[0].name]
        outputs = _artifact_outputs(ctx, samples)
        base = {"dataset": f"{cal.name}:{split}", "samples": len(reference)}
        if ctx.task == "classification":
            ctx.accuracy = {"metric": "top1", **base, "reference": metrics.top1(reference, labels),
                            "per_artifact": {f: metrics.top1(y, labels) for f, y in outputs.items()}}
        elif ctx.task == "embedding":
            cosines = {f: metrics.per_sample_cosine(reference, y) for f, y in outputs.items()}
            ctx.accuracy = {"metric": "embedding_cosine", **base, "reference": 1.0,
                            "per_artifact": {f: float(c.mean()) for f, c in cosines.items()},
                            "min_per_artifact": {f: float(c.min()) for f, c in cosines.items()}}
        else:
            tokens = samples[ctx.inputs[0].name]
            ppl = metrics.causal_lm_perplexity(reference, tokens)
            per = {f: metrics.causal_lm_perplexity(y, tokens) for f, y in outputs.items()}
            ctx.accuracy = {"metric": "perplexity", **base, "reference": ppl, "per_artifact": per,
                            "perplexity_delta": {f: p / ppl - 1 for f, p in per.items()},
                            "next_token_agreement": {f: metrics.next_token_agreement(reference, y) for f, y in outputs.items()}}
