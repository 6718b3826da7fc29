"""Compression stage: runs the recipe (share -> prune -> lowrank -> distill -> qat) on the
PyTorch model before export and records what each step did.

Everything else has its home elsewhere: the recipe is loaded (and refused when bad) by the
pipeline before any stage (:func:`edgekit.pipeline.load_recipe`); the build's inputs become
training data in :meth:`edgekit.compress.TrainData.from_build`; each step is measured by
:func:`edgekit.compress.metrics.measure_step` (fp32 bytes and host latency of the graph the ONNX
export stage would ship); the result is judged against the original model by the quality budget
(:mod:`edgekit.budget`) before any conversion.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.budget import budget_bound, budget_metric, describe, final_budget, judge
from edgekit.context import BuildContext
from edgekit.errors import QualityBudgetError
from edgekit.stages.base import Stage

if TYPE_CHECKING:
    from edgekit.compress import TrainData


def default_finetune_epochs(ctx: BuildContext, data: TrainData) -> int:
    """Fine-tuning epochs for prune/lowrank steps that do not set them: the model file's
    ``train_data`` hook or a labelled train split is there to recover what compression
    costs; with calibration inputs only (a hundred-odd samples) the default stays 0 and the
    quality budget judges the result."""
    from edgekit.compress.training import DEFAULT_FINETUNE_EPOCHS

    return DEFAULT_FINETUNE_EPOCHS if "train_data" in ctx.hooks or data.has_labels else 0


class Compress(Stage):
    """Apply the compression recipe to the PyTorch model before export."""

    name = "compress"
    description = "compressing the model"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.recipe is not None and bool(ctx.recipe.steps)

    def run(self, ctx: BuildContext) -> None:
        from edgekit.compress import Method, TrainData, run, validate
        from edgekit.compress.metrics import measure_step
        from edgekit.compress.qat import to_float

        recipe = ctx.recipe.with_channel_multiple(ctx.profile.compress.channel_multiple)
        data = TrainData.from_build(ctx)
        metric = budget_metric(ctx, data)
        bound, source = budget_bound(ctx, metric)  # a --max-drop for another metric: refused before work
        defaulted, epochs = recipe.defaulted_finetune(), default_finetune_epochs(ctx, data)
        recipe = recipe.with_default_finetune(epochs)
        for method in sorted(defaulted):
            ctx.reporter.info(f"{method}: finetune_epochs={epochs} by default "
                              f"({'the model comes with training data' if epochs else 'no training data'}; set it to change)")
        validate(recipe, ctx.model, data, example_inputs=ctx.example_inputs)  # refuse before any work
        measured: list[dict] = []
        model, reports = run(recipe, ctx.model, data, example_inputs=ctx.example_inputs,
                             on_step=lambda method, m: measured.append(measure_step(m, ctx, data)))
        if recipe.steps[-1].method is Method.QAT:
            ctx.qat_model = model
            model = to_float(model)  # weights on the int8 grid, for the PTQ converters
        ctx.original, ctx.model = ctx.model, model.eval()  # quality is judged against the original too
        ctx.compression = [{**r.to_dict(), **m} for r, m in zip(reports, measured)]
        _record(ctx, defaulted)
        try:
            judge(ctx.compression, metric, bound, source)  # raises before any conversion work
        except QualityBudgetError as exc:
            if not ctx.options.allow_drift:
                raise
            ctx.reporter.info(f"   budget: {exc}: kept (--allow-drift)")  # recorded: budget.passed false
            return
        ctx.reporter.info(f"   budget: {describe(final_budget(ctx.compression))}: kept")


def _record(ctx: BuildContext, defaulted: set[str]) -> None:
    """Mark the settings the build chose and print one line per step."""
    for r in ctx.compression:
        if r["method"] in defaulted:
            r["defaulted"] = ["finetune_epochs"]  # chosen by the build, not the recipe
        acc = f"top-1 {r['accuracy'] * 100:.2f}%" if r["accuracy"] is not None else f"cosine {r['cosine']:.4f}"
        ctx.reporter.info(f"{r['method']:>9}: {r['params']:,} params, {acc}, {r['onnx_fp32_bytes'] / 1e3:.1f} KB fp32")
