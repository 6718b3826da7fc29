"""Compression stage: runs the recipe (share -> prune -> lowrank -> distill -> qat) on the
PyTorch model before export, with the calibration set's labelled splits as training data.

The methods live in :mod:`edgekit.compress`; this stage turns build inputs into their data,
applies the target's channel multiple to structured pruning, fine-tunes prune and lowrank by
default when the model comes with training data, and measures every step: the library's figures
(params, MACs, accuracy, cosine, sparsity; perplexity for language models) plus real fp32 ONNX
bytes and onnxruntime host latency of the model after the step. The result is then judged
against the original model by the quality budget (:mod:`edgekit.budget`) before any conversion.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.budget import Metric, describe, judge
from edgekit.context import BuildContext, Reporter
from edgekit.errors import MaxDropError, UnsupportedError
from edgekit.options import BuildOptions
from edgekit.stages.base import Stage


def load_recipe(options: BuildOptions):
    """The recipe from ``--recipe``, CLI shorthand, or ``edgekit.toml`` beside the model;
    parsed (and refused when malformed) before the build does any work."""

    recipe = _parse_recipe(options)
    if recipe is not None and recipe.steps and options.model and options.model.endswith(".onnx"):
        raise UnsupportedError("compression needs a PyTorch model; this build starts from ONNX",
                               "pass file.py:factory or a .pt2, or drop the compression options")
    if options.max_drop is not None and (recipe is None or not recipe.steps):
        raise MaxDropError(f"--max-drop {options.max_drop} bounds what compression costs, but this build compresses nothing",
                           "drop --max-drop, or add a step such as --prune structured:0.5")
    return recipe


def _parse_recipe(options: BuildOptions):
    from edgekit.compress import Recipe

    if options.recipe and options.recipe_file:
        raise UnsupportedError("both --recipe FILE and compression flags were given", "use one of them")
    if options.recipe:
        return Recipe.from_cli(list(options.recipe))
    path = options.recipe_file or _beside_model(options.model)
    if path is None:
        return None
    if not Path(path).is_file():
        raise UnsupportedError(f"recipe file {path} does not exist", "check the --recipe path")
    return Recipe.from_toml(Path(path))


def _beside_model(model: str | None) -> Path | None:
    if not model or ":" not in model or model.endswith((".onnx", ".pt2")):
        return None
    candidate = Path(model.rpartition(":")[0]).parent / "edgekit.toml"
    return candidate if candidate.is_file() else None


def _tensor(samples: dict | None, name: str):
    """``[N, 1, *shape]`` build samples -> ``[N, *shape]`` training tensor."""
    import torch

    if samples is None:
        return None
    x = samples[name]
    return torch.from_numpy(np.ascontiguousarray(x.reshape((-1,) + x.shape[2:])))


def _labels(y):
    import torch

    return None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))


def _inputs(samples: dict | None, names: list[str]):
    """One training tensor for a single-input model, else a tuple in the model's input order."""
    if samples is None:
        return None
    if len(names) == 1:
        return _tensor(samples, names[0])
    return tuple(_tensor(samples, n) for n in names)


def _concat(a, b):
    import torch

    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    return torch.cat([a, b])


def train_data(ctx: BuildContext):
    """Labelled train/eval splits when the calibration set has them, else calibration inputs
    with the uncompressed model as the only label source.

    An unlabelled ``train`` split (e.g. the text set's extra sentences) is training input too,
    together with the calibration inputs: the teacher labels both. Reports use the ``eval``
    split (``heldout`` of a text set: measured, never trained on) when present, else
    ``verification``. Multi-input models get a tuple of tensors in input order.
    """
    from edgekit.compress import TrainData

    progress = training_progress(ctx.reporter)
    if "train_data" in ctx.hooks:  # the model file's own data wins over the calibration set
        x_train, y_train, x_eval, y_eval = ctx.hooks["train_data"]()
        return TrainData(x_train, y_train, x_eval, y_eval, seed=ctx.options.seed, on_batch=progress)
    cal, names, seed = ctx.calibration, [s.name for s in ctx.inputs], ctx.options.seed
    train = cal.train_samples()
    if train is not None and cal.train_labels is not None:
        return TrainData(_inputs(train, names), _labels(cal.train_labels), _inputs(cal.eval, names),
                         _labels(cal.eval_labels), seed=seed, on_batch=progress)
    x_train = _inputs(cal.calibration, names)
    if train is not None:
        x_train = _concat(_inputs(train, names), x_train)
    x_eval = _inputs(cal.eval if cal.eval is not None else cal.verification, names)
    return TrainData(x_train, x_eval=x_eval, seed=seed, trim_padding=_trim_padding(ctx, x_train, names),
                     on_batch=progress)


def training_progress(reporter: Reporter, every_s: float = 20.0) -> Callable[[int, int, int, int, float], None]:
    """An ``on_batch`` callback printing epoch, batch, loss and time left every ``every_s``
    seconds: distilling on the large text set runs for tens of minutes."""
    state = {"start": 0.0, "last": 0.0}

    def on_batch(epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None:
        now = time.monotonic()
        if epoch == 0 and batch == 1:  # a new training run (each method fits once)
            state["start"] = state["last"] = now
        done = (epoch * batches + batch) / (epochs * batches)
        if now - state["last"] < every_s:
            return
        state["last"] = now
        left = (now - state["start"]) * (1 - done) / done
        reporter.info(f"training: epoch {epoch + 1}/{epochs}, batch {batch}/{batches} ({done:.0%}), "
                      f"loss {loss:.4f}, about {left / 60:.0f} min left")

    return on_batch


def _trim_padding(ctx: BuildContext, x_train, names: list[str]) -> int | None:
    """Token models with an ``attention_mask`` input train on minibatches cut to their longest
    sentence (several times faster on short sentences) when that provably leaves the model's
    outputs unchanged; models with fixed-length parts keep the full padded length."""
    from edgekit.compress.data import padding_trim_is_exact

    if len(names) < 2 or "attention_mask" not in names or ctx.model is None:
        return None
    index = names.index("attention_mask")
    return index if padding_trim_is_exact(ctx.model, x_train, index) else None


def _with_channel_multiple(recipe, multiple: int):
    from edgekit.compress import Method, PruneKind, Recipe

    steps = []
    for step in recipe.steps:
        if step.method is Method.PRUNE and step.options.kind is PruneKind.STRUCTURED and step.options.round_to is None:
            step = dataclasses.replace(step, options=dataclasses.replace(step.options, round_to=multiple))
        steps.append(step)
    return Recipe(tuple(steps))


def _with_default_finetune(recipe, epochs: int):
    """Prune and lowrank steps that leave ``finetune_epochs`` unset get ``epochs``."""
    from edgekit.compress import Method, Recipe

    steps = []
    for step in recipe.steps:
        if step.method in (Method.PRUNE, Method.LOWRANK) and step.options.finetune_epochs is None:
            step = dataclasses.replace(step, options=dataclasses.replace(step.options, finetune_epochs=epochs))
        steps.append(step)
    return Recipe(tuple(steps))


def _defaulted(recipe) -> set[str]:
    """The methods whose ``finetune_epochs`` the user left to the build."""
    return {s.method.value for s in recipe.steps if getattr(s.options, "finetune_epochs", 0) is None}


def default_finetune_epochs(ctx: BuildContext, data) -> int:
    """Fine-tuning epochs for prune/lowrank steps that do not set them: the model file's
    ``train_data`` hook or a labelled train split is there to recover what compression
    costs; with calibration inputs only (a hundred-odd samples) the default stays 0 and the
    quality budget judges the result."""
    from edgekit.compress.training import DEFAULT_FINETUNE_EPOCHS

    return DEFAULT_FINETUNE_EPOCHS if "train_data" in ctx.hooks or data.has_labels else 0


def budget_metric(ctx: BuildContext, data) -> Metric:
    """The one figure that judges this model: the metric of its task."""
    from edgekit.compress import Task

    if ctx.task == "lm":
        return Metric.PPL_INCREASE
    _, y = data.eval_split()
    return Metric.TOP1_DROP if y is not None and data.resolved_task is Task.CLASSIFICATION else Metric.COSINE


def _budget_bound(ctx: BuildContext, metric: Metric) -> tuple[float | None, str]:
    """The bound and where it comes from; a ``--max-drop`` for another metric is refused."""
    override = ctx.options.max_drop
    if override is None:
        return getattr(ctx.profile.budget, metric.budget_field), f"{ctx.profile.name} profile budget"
    if override.metric is not metric:
        example = {Metric.TOP1_DROP: "2pp", Metric.COSINE: "cos:0.95", Metric.PPL_INCREASE: "ppl:10%"}[metric]
        raise MaxDropError(f"--max-drop {override} bounds {override.metric.value}, but this model is judged by "
                           f"{metric.value}", f"pass e.g. --max-drop {example}")
    return override.bound, f"--max-drop {override}"


def _measure_step(model, ctx: BuildContext, data) -> dict:
    """Bytes and latency of one step's model, its perplexity for a language model, plus the
    user's ``evaluate`` metrics if defined."""
    out = _export_and_time(model, ctx)
    if ctx.task == "lm":
        out["perplexity"] = _perplexity(model, data)
    if "evaluate" in ctx.hooks:
        x, y = data.eval_split()
        out["user_metrics"] = {k: float(v) for k, v in ctx.hooks["evaluate"](model.eval(), x, y).items()}
    return out


def _perplexity(model, data) -> float:
    """Perplexity on the eval windows (the first input holds the token ids)."""
    from edgekit.compress.data import as_tuple
    from edgekit.compress.metrics import model_output
    from edgekit.verify.metrics import causal_lm_perplexity

    x, _ = data.eval_split()
    return causal_lm_perplexity(model_output(model, x).numpy(), as_tuple(x)[0].numpy())


def _export_and_time(model, ctx: BuildContext, runs: int = 30) -> dict:
    """Real fp32 ONNX bytes and onnxruntime p50 of one step's model."""
    import torch

    from edgekit.isolated import captured
    from edgekit.verify.hostrun import ORTSession

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        with captured():
            torch.onnx.export(model.eval(), ctx.example_inputs, str(path), dynamo=False, opset_version=17,
                              input_names=[s.name for s in ctx.inputs], output_names=[s.name for s in ctx.outputs])
        session = ORTSession(path, ctx.inputs, ctx.outputs, threads=1)
        sample = {k: v[0] for k, v in ctx.calibration.verification.items()}
        return {"onnx_fp32_bytes": path.stat().st_size, "ort_fp32_p50_ms": float(np.median(session.latency_ms(sample, runs)))}


class Compress(Stage):
    """Apply the compression recipe to the PyTorch model before export."""

    name = "compress"
    description = "compressing the model"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.recipe is not None and bool(ctx.recipe.steps)

    def run(self, ctx: BuildContext) -> None:
        from edgekit.compress import Method, run, validate
        from edgekit.compress.qat import to_float

        recipe = _with_channel_multiple(ctx.recipe, ctx.profile.compress.channel_multiple)
        data = train_data(ctx)
        metric = budget_metric(ctx, data)
        bound, source = _budget_bound(ctx, metric)  # a --max-drop for another metric: refused before work
        defaulted, epochs = _defaulted(recipe), default_finetune_epochs(ctx, data)
        recipe = _with_default_finetune(recipe, epochs)
        for method in sorted(defaulted):
            ctx.reporter.info(f"{method}: finetune_epochs={epochs} by default "
                              f"({'the model comes with training data' if epochs else 'no training data'}; set it to change)")
        validate(recipe, ctx.model, data, example_inputs=ctx.example_inputs)  # refuse before any work
        measured: list[dict] = []
        model, reports = run(recipe, ctx.model, data, example_inputs=ctx.example_inputs,
                             on_step=lambda method, m: measured.append(_measure_step(_plain(m), ctx, data)))
        if recipe.steps[-1].method is Method.QAT:
            ctx.qat_model = model
            model = to_float(model)  # weights on the int8 grid, for the PTQ converters
        ctx.model = model.eval()
        ctx.compression = [{**r.to_dict(), **m} for r, m in zip(reports, measured)]
        for r in ctx.compression:
            if r["method"] in defaulted:
                r["defaulted"] = ["finetune_epochs"]  # chosen by the build, not the recipe
            acc = f"top-1 {r['accuracy'] * 100:.2f}%" if r["accuracy"] is not None else f"cosine {r['cosine']:.4f}"
            ctx.reporter.info(f"{r['method']:>9}: {r['params']:,} params, {acc}, {r['onnx_fp32_bytes'] / 1e3:.1f} KB fp32")
        judge(ctx.compression, metric, bound, source)  # raises before any conversion work
        ctx.reporter.info(f"   budget: {describe(ctx.compression[-1]['budget'])}: kept")


def _plain(model):
    """QAT models are timed as their float equivalent (fake-quant ops are not deployable)."""
    from edgekit.compress.qat import QuantWrapped, to_float

    return to_float(model) if isinstance(model, QuantWrapped) else model
