"""Compression recipes: an ordered list of methods with options, validated before any work.

The order is fixed and documented: share -> prune -> lowrank -> distill -> qat.
Sharing first (it changes what the other steps count as one parameter); pruning and
low-rank next (they remove capacity); distillation after them (it recovers the accuracy
they cost, with the uncompressed model as teacher); QAT last, because it must see the
final weights: any change after it would break the int8 grids it trained for.

Recipes come from TOML (``[[compress]]`` tables, e.g. ``method="prune" kind="structured"
ratio=0.3``) or CLI shorthand (``prune=structured:0.3``, ``lowrank=energy:0.9``,
``distill=epochs=3``, ``qat=epochs=1``, ``share=auto``; more options as ``,key=value``,
list values joined by ``+``, feature pairs as ``features=student.mod:teacher.mod+...``). Steps
must be listed in the fixed order.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import tomllib
import torch
from torch import nn

from edgekit.compress import distill, lowrank, pruning, qat, sharing
from edgekit.compress.data import Task, TrainData
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import count_macs, count_params, evaluate_top1, output_cosine, sparsity_report


class Method(str, Enum):
    """The compression methods, in the order a recipe runs them."""

    SHARE = "share"
    PRUNE = "prune"
    LOWRANK = "lowrank"
    DISTILL = "distill"
    QAT = "qat"


ORDER: tuple[Method, ...] = tuple(Method)  # the enum is declared in run order
OPTIONS: dict[Method, type] = {
    Method.SHARE: sharing.ShareOptions, Method.PRUNE: pruning.PruneOptions,
    Method.LOWRANK: lowrank.LowRankOptions, Method.DISTILL: distill.DistillOptions,
    Method.QAT: qat.QatOptions,
}
AnyOptions = (sharing.ShareOptions | pruning.PruneOptions | lowrank.LowRankOptions
              | distill.DistillOptions | qat.QatOptions)


@dataclass(frozen=True)
class Step:
    """One method and its options."""

    method: Method
    options: AnyOptions

    def __post_init__(self) -> None:
        if not isinstance(self.options, OPTIONS[self.method]):
            raise RecipeError(f"{self.method.value}: options must be "
                              f"{OPTIONS[self.method].__name__}, got {type(self.options).__name__}")


@dataclass(frozen=True)
class Recipe:
    """An ordered tuple of steps; at most one per method, in :data:`ORDER`."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        _check_order([s.method for s in self.steps])

    def with_channel_multiple(self, multiple: int) -> Recipe:
        """Structured pruning steps that leave ``round_to`` unset keep channel counts that are
        multiples of ``multiple`` (the target's SIMD width)."""
        def rounded(step: Step) -> Step:
            o = step.options
            if step.method is Method.PRUNE and o.kind is pruning.PruneKind.STRUCTURED and o.round_to is None:
                return dataclasses.replace(step, options=dataclasses.replace(o, round_to=multiple))
            return step

        return Recipe(tuple(rounded(s) for s in self.steps))

    def defaulted_finetune(self) -> set[str]:
        """The methods whose ``finetune_epochs`` the recipe leaves to the build."""
        return {s.method.value for s in self.steps if getattr(s.options, "finetune_epochs", 0) is None}

    def with_default_finetune(self, epochs: int) -> Recipe:
        """Prune and lowrank steps that leave ``finetune_epochs`` unset get ``epochs``."""
        def defaulted(step: Step) -> Step:
            if step.method in (Method.PRUNE, Method.LOWRANK) and step.options.finetune_epochs is None:
                return dataclasses.replace(step, options=dataclasses.replace(step.options, finetune_epochs=epochs))
            return step

        return Recipe(tuple(defaulted(s) for s in self.steps))

    @classmethod
    def from_dicts(cls, tables: list[dict[str, Any]]) -> Recipe:
        """From ``[{"method": "prune", "kind": "structured", "ratio": 0.3}, ...]``."""
        return cls(tuple(_step_from_dict(dict(t)) for t in tables))

    @classmethod
    def from_toml(cls, source: str | Path) -> Recipe:
        """From a TOML file path, or TOML text, holding ``[[compress]]`` tables."""
        text = Path(source).read_text() if _is_path(source) else str(source)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"recipe TOML is invalid: {exc}") from None
        from edgekit.recipefile import split_recipe

        if isinstance(doc.get("compress"), dict) and "method" in doc["compress"]:
            raise RecipeError("recipe TOML has [compress] where steps are [[compress]] tables; write one "
                              '[[compress]] table per method, e.g. [[compress]] method="prune" kind="structured" ratio=0.3')
        _, tables = split_recipe(doc)
        if tables is None:  # a profile overlay only (the profile's [compress] table included), or nothing
            return cls(())
        if not tables:
            raise RecipeError("recipe TOML has no [[compress]] tables; add one per method, "
                              'e.g. [[compress]] method="prune" kind="structured" ratio=0.3')
        return cls.from_dicts(tables)

    @classmethod
    def from_cli(cls, items: list[str]) -> Recipe:
        """From shorthand strings such as ``["prune=structured:0.3", "qat=epochs=1"]``."""
        return cls(tuple(_step_from_dict(parse_shorthand(s)) for s in items))


def _is_path(source: str | Path) -> bool:
    return isinstance(source, Path) or ("\n" not in source and source.endswith(".toml"))


def _check_order(methods: list[Method]) -> None:
    for i, m in enumerate(methods):
        if m in methods[:i]:
            raise RecipeError(f"recipe lists {m.value!r} twice; merge them into one step")
    for earlier, later in zip(methods, methods[1:]):
        if ORDER.index(later) > ORDER.index(earlier):
            continue
        if earlier is Method.QAT:
            raise RecipeError(f"qat must be the last step (it must see the final weights), but "
                              f"{later.value!r} comes after it; move {later.value!r} before qat")
        raise RecipeError(f"recipe steps run in the fixed order {' -> '.join(m.value for m in ORDER)}; "
                          f"{later.value!r} is listed after {earlier.value!r}: reorder them")


def _method(name: Any) -> Method:
    try:
        return Method(name)
    except ValueError:
        known = ", ".join(m.value for m in Method)
        raise RecipeError(f"unknown compression method {name!r}; known methods: {known}") from None


def _step_from_dict(table: dict[str, Any]) -> Step:
    if "method" not in table:
        raise RecipeError(f"recipe step {table} has no 'method'; add method=\"prune\" (or "
                          f"{', '.join(m.value for m in Method)})")
    method = _method(table.pop("method"))
    if method is Method.LOWRANK:
        _lowrank_aliases(table)
    cls = OPTIONS[method]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise RecipeError(f"{method.value}: unknown option(s) {', '.join(unknown)}; valid "
                          f"options: {', '.join(sorted(fields))}")
    _check_scalars(method, cls, table)
    try:
        return Step(method, cls(**table))
    except TypeError as exc:  # e.g. a list where a number was expected
        raise RecipeError(f"{method.value}: bad option value ({exc})") from None


_SCALARS = {bool: "true or false", int: "an integer", float: "a number"}


def _check_scalars(method: Method, cls: type, table: dict[str, Any]) -> None:
    """Number and flag options must be numbers and flags (``ratio="half"``, ``steps=2.5`` or
    ``dropout="yes"`` would otherwise fail, or mean something else, mid-build)."""
    hints = typing.get_type_hints(cls)
    for key, value in table.items():
        allowed = set(typing.get_args(hints[key]) or (hints[key],))
        wanted = next((t for t in _SCALARS if t in allowed), None)
        if wanted is None or (value is None and type(None) in allowed):
            continue
        ok = isinstance(value, bool) if wanted is bool else (
            not isinstance(value, bool) and isinstance(value, (int, float) if wanted is float else int))
        if not ok:
            raise RecipeError(f"{method.value}: {key}={value!r} must be {_SCALARS[wanted]}, e.g. "
                              f"{key}={'true' if wanted is bool else (1 if wanted is int else 0.5)}")


def _lowrank_aliases(table: dict[str, Any]) -> None:
    """``energy=0.9`` / ``ratio=0.5`` mean rule + value, as in the CLI shorthand."""
    for rule in ("energy", "ratio"):
        if rule in table:
            if "value" in table or "rule" in table:
                raise RecipeError(f"lowrank: give either {rule}=... or rule/value, not both")
            table["rule"], table["value"] = rule, table.pop(rule)


_POSITIONAL = {  # what the ``a:b`` part of the shorthand means for each method
    Method.PRUNE: ("kind", "ratio"), Method.LOWRANK: ("rule", "value"),
    Method.DISTILL: ("student",), Method.QAT: (), Method.SHARE: (),
}


def parse_shorthand(text: str) -> dict[str, Any]:
    """``"prune=structured:0.3,steps=2"`` -> ``{"method": "prune", "kind": ..., ...}``."""
    name, sep, rest = text.strip().partition("=")
    method = _method(name.strip())
    if not sep or not rest:
        raise RecipeError(f"compress shorthand {text!r} has no settings; write e.g. "
                          "prune=structured:0.3, lowrank=energy:0.9, distill=epochs=3, "
                          "qat=epochs=1, share=auto")
    table: dict[str, Any] = {"method": method.value}
    for i, item in enumerate(p.strip() for p in rest.split(",")):
        key, eq, value = item.partition("=")
        if eq:
            table[key.strip()] = _literal(value.strip(), key.strip())
        elif i == 0:
            table.update(_positional(method, item))
        else:
            raise RecipeError(f"{method.value}: {item!r} in {text!r} needs a key (key=value)")
    return table


def _positional(method: Method, item: str) -> dict[str, Any]:
    if method is Method.SHARE:
        if item == "auto":
            return {"auto": True}
        kept, colon, replaced = item.partition(":")
        if colon:  # share=embed.weight:lm_head.weight
            return {"pairs": ((kept, replaced),), "auto": False}
    names, parts = _POSITIONAL[method], item.split(":")
    if len(parts) > len(names):
        raise RecipeError(f"{method.value}: cannot read {item!r}; expected "
                          f"{':'.join(names) or 'key=value settings'}")
    return {n: _literal(p, n) for n, p in zip(names, parts)}


_LIST_KEYS = {"ignored_layers", "skip", "keep_blocks"}


def _literal(value: str, key: str) -> Any:
    """Shorthand values: ints, floats, true/false, ``+``-joined lists, else strings;
    ``features=s1:t1+s2:t2`` gives (student, teacher) module pairs."""
    if key == "features":
        return tuple(tuple(p.split(":")) for p in value.split("+") if p)
    if key in _LIST_KEYS:
        return tuple(_literal(v, "") for v in value.split("+") if v)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class StageReport:
    """What one step produced, measured the same way for every method.

    ``accuracy`` is top-1 on the eval split when the data has class labels; ``cosine`` is
    the mean output cosine to the uncompressed model on the eval inputs; ``sparsity`` is
    the global zero fraction of Conv/Linear weights. ``details`` is the method's report.
    """

    method: str
    settings: dict[str, Any]
    params: int
    macs: int | None
    accuracy: float | None
    cosine: float | None
    sparsity: float
    seconds: float
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def validate(recipe: Recipe, model: nn.Module, data: TrainData | None = None, *,
             example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
    """Check every step against the model and data; raises RecipeError, does no work."""
    _check_order([s.method for s in recipe.steps])
    for step in recipe.steps:
        o, m = step.options, step.method
        if m is Method.SHARE:
            sharing.validate(o, model, data)
        elif m is Method.PRUNE:
            pruning.validate(o, model, data, example_inputs=example_inputs)
        elif m is Method.LOWRANK:
            lowrank.validate(o, model, data)
        elif m is Method.DISTILL:
            distill.validate(o, model, data, teacher=model)
        else:
            qat.validate(o, model, data, teacher=model)


def run(recipe: Recipe, model: nn.Module, data: TrainData | None = None, *,
        example_inputs: tuple[torch.Tensor, ...] | None = None,
        on_step: Callable[[str, nn.Module], None] | None = None,
        ) -> tuple[nn.Module, list[StageReport]]:
    """Validate, then run each step on the previous step's output.

    Returns the compressed model and one report per step, preceded by an ``original``
    report of the input model (the reference for every later figure). The input model is
    not modified; it is the teacher of fine-tuning, distillation and QAT. ``on_step`` sees the
    model after each step (and the original first), e.g. to export and time it.
    """
    validate(recipe, model, data, example_inputs=example_inputs)
    if example_inputs is None and data is not None:
        example_inputs = data.example_inputs()
    original = copy.deepcopy(model).eval()
    reports = [_measure("original", {}, original, original, data, example_inputs, 0.0, {})]
    if on_step:
        on_step("original", original)
    current = original
    for step in recipe.steps:
        start = time.perf_counter()
        current, details = _run_step(step, current, original, data, example_inputs)
        reports.append(_measure(step.method.value, _settings(step.options), current, original,
                                data, example_inputs, time.perf_counter() - start, details))
        if on_step:
            on_step(step.method.value, current)
    return current, reports


def _run_step(step: Step, model: nn.Module, teacher: nn.Module, data: TrainData | None,
              example_inputs: tuple[torch.Tensor, ...] | None) -> tuple[nn.Module, dict]:
    o, m = step.options, step.method
    if m is Method.SHARE:
        return sharing.apply(model, o, data)
    if m is Method.PRUNE:
        return pruning.apply(model, o, data, teacher=teacher, example_inputs=example_inputs)
    if m is Method.LOWRANK:
        return lowrank.apply(model, o, data, teacher=teacher)
    if m is Method.DISTILL:
        return distill.apply(model, o, data, teacher=teacher)
    return qat.apply(model, o, data, teacher=teacher)


def _settings(options: AnyOptions) -> dict[str, Any]:
    return {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options) if f.init}


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _measure(method: str, settings: dict[str, Any], model: nn.Module, original: nn.Module,
             data: TrainData | None, example_inputs: tuple[torch.Tensor, ...] | None,
             seconds: float, details: dict[str, Any]) -> StageReport:
    accuracy = cosine = None
    if data is not None:
        x, y = data.eval_split()
        cosine = output_cosine(model, original, x)
        if y is not None and data.resolved_task is Task.CLASSIFICATION:
            accuracy = evaluate_top1(model, x, y)
    macs = count_macs(model, example_inputs) if example_inputs is not None else None
    return StageReport(method=method, settings=settings, params=count_params(model), macs=macs,
                       accuracy=accuracy, cosine=cosine,
                       sparsity=sparsity_report(model)["global"], seconds=seconds,
                       details=details)
