"""Quality of every decoder artifact on held-out text (never the calibration split):
perplexity (teacher-forced, windows of the profile's context), next-token top-1 agreement with
the original, and the greedy continuation match on the held-out prompts.

Figures use the arithmetic that judged the artifact (``judging_decoder``); the original's come
from the torch model through the same runner functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.context import BuildContext
from edgekit.llm.stages.bundle import llm_facts
from edgekit.llm.stages.prompts import original
from edgekit.llm.stages.verify import host_threads, judging_decoder
from edgekit.runner.edgekit_runner import OrtDecoder, golden_metrics, reference_model, teacher_forced
from edgekit.stages.base import Stage


def agreement(predicted: list[int], reference: list[int]) -> float:
    return sum(int(a == b) for a, b in zip(predicted, reference)) / max(1, len(reference))


def figures(decoder: Any, tokens: list[int], heldout: dict, reference: dict | None) -> tuple[dict, dict]:
    """(the figures, the raw teacher-forced scores)."""
    scored = teacher_forced(decoder, tokens)
    out = {"perplexity": round(scored["value"], 4), "tokens": scored["tokens"],
           "continuation_match": round(golden_metrics(decoder, heldout)["token_match"], 4)}
    if reference is not None:
        out["top1_agreement"] = round(agreement(scored["predictions"], reference["predictions"]), 4)
        out["perplexity_increase_pct"] = round(100 * (scored["value"] / reference["value"] - 1), 3)
    return out, scored


def baseline_decoder(ctx: BuildContext, artifact: Any, path: Path) -> Any:
    """A baseline file (not shipped) under the arithmetic that judges ``artifact``."""
    reference = artifact.verification["semantics"] == "reference"
    return OrtDecoder.from_file(reference_model(path) if reference else path, llm_facts(ctx), threads=host_threads(ctx))


class LlmQuality(Stage):
    name = "quality"
    description = "perplexity, next-token agreement and continuations on held-out text"

    def run(self, ctx: BuildContext) -> None:
        llm, heldout = ctx.llm, ctx.llm.heldout.to_npz()
        reference_figures, reference = figures(original(ctx), llm.heldout_text, heldout, None)
        per_artifact = {}
        for artifact in ctx.artifacts:
            ctx.reporter.info(f"quality of {artifact.file}")
            per_artifact[artifact.file] = figures(judging_decoder(ctx, artifact), llm.heldout_text, heldout, reference)[0]
            for name, baseline in (artifact.quantization.get("baselines") or {}).items():
                ctx.reporter.info(f"quality of the {name} baseline of {artifact.file} (not shipped)")
                decoder = baseline_decoder(ctx, artifact, Path(baseline.pop("file")))
                baseline.update(figures(decoder, llm.heldout_text, heldout, reference)[0])
        ctx.accuracy = {"metric": "perplexity", "split": "heldout", "reference": reference_figures,
                        "artifacts": per_artifact}
