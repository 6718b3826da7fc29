"""The quality budget of compression: each step's model judged against the *original* model.

Artifacts are verified against the model that is converted; without this check a compression
recipe that wrecks the model (structured pruning without fine-tuning took the digits example
from 99.72 % to 16.94 % top-1) would pass every later stage. One metric judges each model,
the one that measures its task: classifiers by the top-1 drop in percentage points, language
models by the perplexity increase in %, other models (embeddings, regression) by the mean
output cosine to the original. The bound comes from the profile's ``[budget]`` table or from
``--max-drop``. No torch here: the CLI parses ``--max-drop`` with this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from edgekit.errors import MaxDropError, QualityBudgetError

if TYPE_CHECKING:
    from edgekit.compress import TrainData
    from edgekit.context import BuildContext

#: how to write ``--max-drop``, shown in its help text and in every parse error
MAX_DROP_SYNTAX = "2pp or 2 (top-1 drop, percentage points), cos:0.99 (min cosine), ppl:5% (perplexity increase)"


class Metric(str, Enum):
    """What a budget bounds; the value is the field name in the manifest."""

    TOP1_DROP = "top1_drop_pp"  # upper bound
    COSINE = "cosine"  # lower bound
    PPL_INCREASE = "ppl_increase_pct"  # upper bound

    @property
    def budget_field(self) -> str:
        """The matching field of :class:`edgekit.targets.Budget`."""
        return {"top1_drop_pp": "max_top1_drop_pp", "cosine": "min_cosine",
                "ppl_increase_pct": "max_ppl_increase_pct"}[self.value]


@dataclass(frozen=True)
class MaxDrop:
    """A ``--max-drop`` override of the profile's bound for one metric."""

    metric: Metric
    bound: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", Metric(self.metric))
        ok = -1.0 <= self.bound <= 1.0 if self.metric is Metric.COSINE else self.bound >= 0.0
        if not math.isfinite(self.bound) or not ok:
            allowed = "a cosine in [-1, 1]" if self.metric is Metric.COSINE else "a number >= 0"
            raise MaxDropError(f"--max-drop bound {self.bound} for {self.metric.value} is out of range",
                               f"give {allowed}: {MAX_DROP_SYNTAX}")

    @classmethod
    def parse(cls, text: str) -> MaxDrop:
        """``"2pp"``/``"2"`` -> top-1 drop, ``"cos:0.99"`` -> cosine, ``"ppl:5%"`` -> perplexity."""
        value = text.strip().lower()
        metric = Metric.TOP1_DROP
        for prefix, m in (("cos:", Metric.COSINE), ("ppl:", Metric.PPL_INCREASE)):
            if value.startswith(prefix):
                metric, value = m, value[len(prefix):].removesuffix("%" if m is Metric.PPL_INCREASE else "")
        if metric is Metric.TOP1_DROP:
            value = value.removesuffix("pp")
        try:
            bound = float(value.strip())
        except ValueError:
            raise MaxDropError(f"cannot read --max-drop {text!r}", f"write {MAX_DROP_SYNTAX}") from None
        return cls(metric, bound)

    def __str__(self) -> str:
        return {Metric.TOP1_DROP: f"{self.bound:g}pp", Metric.COSINE: f"cos:{self.bound:g}",
                Metric.PPL_INCREASE: f"ppl:{self.bound:g}%"}[self.metric]


def budget_metric(ctx: BuildContext, data: TrainData) -> Metric:
    """The one figure that judges the model of build ``ctx``: the metric of its task, given its
    training data ``data``."""
    from edgekit.compress import Task

    if ctx.task == "lm":
        return Metric.PPL_INCREASE
    _, y = data.eval_split()
    return Metric.TOP1_DROP if y is not None and data.resolved_task is Task.CLASSIFICATION else Metric.COSINE


def budget_bound(ctx: BuildContext, metric: Metric) -> tuple[float | None, str]:
    """The bound and where it comes from; a ``--max-drop`` for another metric is refused."""
    override = ctx.options.max_drop
    if override is None:
        return getattr(ctx.profile.budget, metric.budget_field), f"{ctx.profile.name} profile budget"
    if override.metric is not metric:
        example = {Metric.TOP1_DROP: "2pp", Metric.COSINE: "cos:0.95", Metric.PPL_INCREASE: "ppl:10%"}[metric]
        raise MaxDropError(f"--max-drop {override} bounds {override.metric.value}, but this model is judged by "
                           f"{metric.value}", f"pass e.g. --max-drop {example}")
    return override.bound, f"--max-drop {override}"


def figure(metric: Metric, step: dict[str, Any], original: dict[str, Any]) -> float:
    """The step's figure for ``metric`` against the original (rounded: float32 means)."""
    if metric is Metric.TOP1_DROP:
        value = (original["accuracy"] - step["accuracy"]) * 100
    elif metric is Metric.PPL_INCREASE:
        value = (step["perplexity"] / original["perplexity"] - 1) * 100
    else:
        value = step["cosine"]
    return round(float(value), 6)


def within(metric: Metric, value: float, bound: float | None) -> bool:
    """Whether ``value`` keeps the bound (``None``: unbounded). NaN never does."""
    if bound is None:
        return True
    return value >= bound if metric is Metric.COSINE else value <= bound


#: the metric of each ``accuracy["metric"]`` a build records (edgekit.stages.evaluate)
ACCURACY_METRICS = {"top1": Metric.TOP1_DROP, "embedding_cosine": Metric.COSINE, "output_cosine": Metric.COSINE,
                    "perplexity": Metric.PPL_INCREASE}
#: the accuracy metrics that are a cosine to the reference (1 by definition for the reference itself)
COSINE_METRICS = ("embedding_cosine", "output_cosine")


def against_original(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The part of a build's ``accuracy`` record that compares with the model the user gave:
    its ``original`` record when a recipe compressed the model (the top-level one compares with
    the compressed model every artifact was converted from), else the record itself."""
    return accuracy.get("original") or accuracy


def artifact_figure(metric: Metric, accuracy: dict[str, Any], file: str) -> tuple[float, float]:
    """``(quality, figure)`` of artifact ``file`` from a build's ``accuracy`` record: its top-1,
    mean cosine or perplexity, and the figure ``metric``'s bound applies to (top-1 drop in pp,
    the cosine, the perplexity increase in %), against the model the user gave (a compressed
    build's ``original`` record). Raises ValueError when the build measured another metric (a
    ``--min-cosine`` for a classifier, say)."""
    accuracy = against_original(accuracy)
    measured = ACCURACY_METRICS.get(accuracy.get("metric", ""))
    if measured is not metric:
        raise ValueError(f"the budget bounds {metric.value}, but this model's quality is {accuracy.get('metric') or 'not measured'}")
    quality = float(accuracy["per_artifact"][file])
    original = {"accuracy": accuracy["reference"], "perplexity": accuracy["reference"], "cosine": 1.0}
    step = {"accuracy": quality, "perplexity": quality, "cosine": quality}
    return quality, figure(metric, step, original)


def excess(metric: Metric, value: float, bound: float) -> float:
    """How far ``value`` is outside ``bound`` (<= 0: within; what Optuna's constraints take)."""
    return bound - value if metric is Metric.COSINE else value - bound


def higher_is_better(metric: Metric) -> bool:
    """Whether a larger quality figure (top-1, cosine; not perplexity) is the better artifact."""
    return metric is not Metric.PPL_INCREASE


def judge(steps: list[dict[str, Any]], metric: Metric, bound: float | None, source: str) -> None:
    """Add a ``budget`` entry (metric, figure, bound, passed, source) to every step after
    ``original``; raise :class:`QualityBudgetError` when the final model breaks the bound.

    Only the final model (the one converted) must keep the budget: a later step (distillation)
    may recover what an earlier one lost. The step named is the one from which every model
    stayed outside the budget.
    """
    original, later = steps[0], steps[1:]
    for step in later:
        value = figure(metric, step, original)
        step["budget"] = {"metric": metric.value, "figure": value, "bound": bound,
                          "passed": within(metric, value, bound), "source": source}
    final = final_budget(steps)
    if final is None or final["passed"]:
        return
    culprit = len(later) - 1
    while culprit > 0 and not later[culprit - 1]["budget"]["passed"]:
        culprit -= 1
    raise QualityBudgetError(_problem(later[culprit], original, metric, source), _hint(later[culprit], metric))


def final_budget(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``budget`` entry that decides a compression (:func:`judge`): the last step's, since only
    the model that is converted must keep the budget; None when nothing was compressed or judged."""
    return steps[-1].get("budget") if len(steps) > 1 else None


def describe(entry: dict[str, Any]) -> str:
    """One step's ``budget`` entry as a progress line: ``top1_drop_pp 0.28 <= 1 (rpi4 profile budget)``."""
    op = ">=" if entry["metric"] == Metric.COSINE.value else "<="
    bound = "unbounded" if entry["bound"] is None else f"{op} {entry['bound']:g}"
    return f"{entry['metric']} {entry['figure']:.4g} against the original, {bound} ({entry['source']})"


def _problem(step: dict[str, Any], original: dict[str, Any], metric: Metric, source: str) -> str:
    b = step["budget"]
    if metric is Metric.TOP1_DROP:
        what = (f"top-1 {step['accuracy'] * 100:.2f} % vs {original['accuracy'] * 100:.2f} % for the original, "
                f"a drop of {b['figure']:.2f} pp > {b['bound']:g} pp")
    elif metric is Metric.PPL_INCREASE:
        what = (f"perplexity {step['perplexity']:.3f} vs {original['perplexity']:.3f} for the original, "
                f"+{b['figure']:.2f} % > {b['bound']:g} %")
    else:
        what = f"output cosine to the original {b['figure']:.4f} < {b['bound']:g}"
    return f"compression step {_label(step)} broke the quality budget: {what} ({source})"


def _label(step: dict[str, Any]) -> str:
    s = step["settings"]
    shown = {"prune": ("kind", "ratio", "finetune_epochs"), "lowrank": ("rule", "value", "finetune_epochs"),
             "distill": ("epochs",), "qat": ("epochs",)}.get(step["method"], ())
    return f"{step['method']}" + (f" ({', '.join(f'{k}={s[k]}' for k in shown if k in s)})" if shown else "")


def _hint(step: dict[str, Any], metric: Metric) -> str:
    s = step["settings"]
    change = {
        "prune": f"raise finetune_epochs (now {s.get('finetune_epochs')}), lower ratio (now {s.get('ratio')})",
        "lowrank": f"raise finetune_epochs (now {s.get('finetune_epochs')}), raise {s.get('rule')} (now {s.get('value')})",
        "distill": f"raise epochs (now {s.get('epochs')}) or keep more of the teacher in the student",
        "qat": f"raise epochs (now {s.get('epochs')}) or drop qat",
        "share": "share fewer weights or drop share",
    }.get(step["method"], "change this step")
    value = step["budget"]["figure"]
    if not math.isfinite(value):  # NaN/Inf outputs: no bound accepts them
        return f"{change}, or add a distill step"
    return f"{change}, add a distill step, or accept it with --max-drop {_accepting(value, metric)}"


def _accepting(value: float, metric: Metric) -> str:
    """A ``--max-drop`` value that would let this figure through (rounded outward)."""
    if metric is Metric.COSINE:
        return str(MaxDrop(metric, max(-1.0, math.floor(value * 1000) / 1000)))
    return str(MaxDrop(metric, math.ceil(value * 10) / 10))
