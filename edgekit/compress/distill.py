"""Knowledge distillation: train a smaller student to reproduce a teacher.

Loss = alpha * soft loss (teacher outputs) + (1 - alpha) * task loss (labels, when the data
has them) + feature_weight * sum of intermediate-feature MSEs (optional layer mapping).
Without labels (calibration inputs only) the teacher is the only label source, so alpha is
treated as 1. The student is given, or derived from the teacher: fewer channels
(structured pruning) or fewer blocks (:func:`derive_student_by_depth`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import torch
from torch import nn

from edgekit.compress.data import Inputs, Task, TrainData, call, take
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import first_tensor, output_cosine, run_with_hooks
from edgekit.compress.training import LossFn, fit, soft_target_loss, task_loss


class OutputLoss(str, Enum):
    """How student outputs are matched to teacher outputs."""

    KL = "kl"  # softened logits (classification)
    MSE = "mse"  # raw outputs (regression, embeddings)
    COSINE = "cosine"  # direction only (embeddings compared by cosine similarity)


class StudentSource(str, Enum):
    """Where the student comes from."""

    GIVEN = "given"  # the model handed to apply() (e.g. after pruning/low-rank)
    WIDTH = "width"  # fewer channels: structured pruning of the model, ratio width_ratio
    DEPTH = "depth"  # fewer blocks: derive_student_by_depth(model, keep_blocks)


@dataclass(frozen=True)
class DistillOptions:
    """Options of :func:`apply`.

    Attributes:
        epochs: training epochs over the data (>= 1).
        lr: Adam learning rate.
        temperature: softmax temperature T of the KL loss (the loss is scaled by T^2).
        alpha: weight of the soft (teacher) loss against the task loss when labels exist.
        output_loss: ``None`` = KL for classification, MSE otherwise.
        features: ``(student_module, teacher_module)`` pairs whose outputs are matched by
            MSE; a trained Linear / 1x1-conv adapter maps the student's width to the
            teacher's when they differ (identity when equal).
        feature_weight: weight of the summed feature losses.
        student: given, or derived from the model by width or depth.
        width_ratio: fraction of channels removed for ``student='width'``.
        keep_blocks: block indices kept for ``student='depth'``; ``None`` = alternate.
        container: name of the nn.Sequential/ModuleList of blocks for ``student='depth'``
            (e.g. ``encoder.encoder.layer`` for a Hugging Face BERT inside a wrapper);
            ``None`` = the one with the most droppable blocks.
        batch_size: minibatch size; ``None`` = the data's.
        dropout: train the student in train mode (dropout on); ``False`` trains it in eval
            mode, which fits a teacher's outputs more closely when data is plentiful.
        lr_decay: lower the learning rate linearly to 0 over the run.
    """

    epochs: int = 3
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.7
    output_loss: OutputLoss | None = None
    features: tuple[tuple[str, str], ...] = ()
    feature_weight: float = 1.0
    student: StudentSource = StudentSource.GIVEN
    width_ratio: float = 0.5
    keep_blocks: tuple[int, ...] | None = None
    container: str | None = None
    batch_size: int | None = None
    dropout: bool = True
    lr_decay: bool = False

    def __post_init__(self) -> None:
        for name, cls in (("student", StudentSource), ("output_loss", OutputLoss)):
            value = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, cls(value))
                except ValueError:
                    allowed = ", ".join(repr(m.value) for m in cls)
                    raise RecipeError(f"distill: {name}={value!r} is not one of {allowed}") from None
        object.__setattr__(self, "features", tuple(tuple(p) for p in self.features))
        if self.keep_blocks is not None:
            object.__setattr__(self, "keep_blocks", tuple(self.keep_blocks))
        check_options(self)


def check_options(o: DistillOptions) -> None:
    """Reject values that can never work."""
    if o.epochs < 1:
        raise RecipeError(f"distill: epochs={o.epochs} must be >= 1")
    if o.lr <= 0 or o.temperature <= 0:
        raise RecipeError("distill: lr and temperature must be > 0")
    if not 0.0 <= o.alpha <= 1.0:
        raise RecipeError(f"distill: alpha={o.alpha} must be in [0, 1] (1 = teacher only)")
    if not 0.0 < o.width_ratio < 1.0:
        raise RecipeError(f"distill: width_ratio={o.width_ratio} is out of range; give a "
                          "fraction in (0, 1)")
    if o.batch_size is not None and o.batch_size < 1:
        raise RecipeError(f"distill: batch_size={o.batch_size} must be >= 1")
    if any(len(p) != 2 for p in o.features):
        raise RecipeError("distill: features must be (student_module, teacher_module) pairs")


def validate(options: DistillOptions, model: nn.Module, data: TrainData | None, *,
             teacher: nn.Module | None = None) -> None:
    """Check data, teacher and feature names before any training."""
    check_options(options)
    if data is None:
        raise RecipeError("distill needs data: pass training data (with or without labels) "
                          "or calibration inputs; the teacher labels unlabelled inputs")
    if teacher is None and options.student is StudentSource.GIVEN:
        raise RecipeError("distill needs a teacher, or a student derived from the model "
                          "(student='width' or 'depth')")
    t_names = dict((teacher or model).named_modules())
    s_names = dict(model.named_modules())
    for s, t in options.features:
        if t not in t_names:
            raise RecipeError(f"distill: feature teacher module {t!r} not found in the teacher")
        if options.student is StudentSource.GIVEN and s not in s_names:
            raise RecipeError(f"distill: feature student module {s!r} not found in the student")


def apply(model: nn.Module, options: DistillOptions, data: TrainData | None, *,
          teacher: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Distill ``teacher`` (default: ``model`` itself) into a student; ``(student, report)``.

    The student is a copy of ``model`` (``student='given'``) or derived from it.
    """
    validate(options, model, data, teacher=teacher)
    assert data is not None
    teacher = copy.deepcopy(teacher if teacher is not None else model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if options.batch_size is not None:
        data = dataclasses.replace(data, batch_size=options.batch_size)
    student, derived = _make_student(model, options, data)
    before = output_cosine(student, teacher, data.eval_split()[0])
    loss, adapters, cleanup = _build_loss(student, teacher, options, data)
    try:
        history = fit(student, data, epochs=options.epochs, lr=options.lr, loss_fn=loss,
                      extra_params=[p for a in adapters.values() for p in a.parameters()],
                      train_mode=options.dropout, lr_decay=options.lr_decay)
    finally:
        cleanup()
    report = {"options": _plain(options), "student": derived, "loss": history,
              "cosine_before": before,  # the student's output cosine to the teacher before training
              "adapters": {k: type(a).__name__ for k, a in adapters.items()}}
    return student, report


def _plain(o: DistillOptions) -> dict[str, Any]:
    out = {}
    for k, v in o.__dict__.items():
        out[k] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
    return out


def _make_student(model: nn.Module, o: DistillOptions, data: TrainData,
                  ) -> tuple[nn.Module, dict[str, Any]]:
    if o.student is StudentSource.DEPTH:
        keep = list(o.keep_blocks) if o.keep_blocks is not None else "alternate"
        plan = depth_plan(model, keep, example_inputs=data.example_inputs(), container=o.container)
        return _drop_blocks(model, plan), {"source": "depth", **plan}
    if o.student is StudentSource.WIDTH:
        from edgekit.compress import pruning  # local: pruning pulls in Torch-Pruning paths

        opts = pruning.PruneOptions(kind=pruning.PruneKind.STRUCTURED, ratio=o.width_ratio)
        student, rep = pruning.apply(model, opts, example_inputs=data.example_inputs())
        return student, {"source": "width", "params_before": rep["params_before"],
                         "params_after": rep["params_after"]}
    return copy.deepcopy(model), {"source": "given"}


def _build_loss(student: nn.Module, teacher: nn.Module, o: DistillOptions, data: TrainData,
                ) -> tuple[LossFn, dict[str, nn.Module], Callable[[], None]]:
    """The combined loss, the feature adapters it trains, and a hook-removal callback."""
    task = data.resolved_task
    kind = o.output_loss or (OutputLoss.KL if task is Task.CLASSIFICATION else OutputLoss.MSE)
    feats_s: dict[str, torch.Tensor] = {}
    feats_t: dict[str, torch.Tensor] = {}
    handles = _hook(student, [s for s, _ in o.features], feats_s) + \
        _hook(teacher, [t for _, t in o.features], feats_t)
    adapters = _make_adapters(student, teacher, o.features, feats_s, feats_t, data)
    alpha = o.alpha if data.has_labels else 1.0  # no labels: the teacher is the only source

    def loss(model: nn.Module, xb: Inputs, yb: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            t_out = first_tensor(call(teacher, xb))
        s_out = first_tensor(call(model, xb))
        total = alpha * _output_loss(kind, task, s_out, t_out, o.temperature)
        if yb is not None and alpha < 1.0:
            total = total + (1.0 - alpha) * task_loss(task, s_out, yb)
        for s, t in o.features:
            total = total + o.feature_weight * nn.functional.mse_loss(
                adapters[s](feats_s[s]), feats_t[t])
        return total

    def cleanup() -> None:
        for h in handles:
            h.remove()

    return loss, adapters, cleanup


def _output_loss(kind: OutputLoss, task: Task, s: torch.Tensor, t: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    if kind is OutputLoss.KL:
        return soft_target_loss(Task.CLASSIFICATION, s, t, temperature)
    if kind is OutputLoss.COSINE:
        return 1.0 - nn.functional.cosine_similarity(s.flatten(1), t.flatten(1), dim=1).mean()
    return nn.functional.mse_loss(s, t)


def _hook(model: nn.Module, names: Sequence[str], store: dict[str, torch.Tensor]) -> list[Any]:
    def make(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            store[name] = first_tensor(out)
        return hook
    return [model.get_submodule(n).register_forward_hook(make(n)) for n in names]


def _make_adapters(student: nn.Module, teacher: nn.Module, pairs: tuple[tuple[str, str], ...],
                   feats_s: dict[str, torch.Tensor], feats_t: dict[str, torch.Tensor],
                   data: TrainData) -> dict[str, nn.Module]:
    """Probe one batch for feature shapes; identity when equal, else a learned projection."""
    if not pairs:
        return {}
    with torch.no_grad():
        call(student.eval(), take(data.x_train, slice(0, 2)))
        call(teacher, take(data.x_train, slice(0, 2)))
    torch.manual_seed(data.seed)  # adapter init is part of the seeded run
    return {s: feature_adapter(feats_s[s].shape, feats_t[t].shape, f"{s}->{t}") for s, t in pairs}


def feature_adapter(s_shape: torch.Size, t_shape: torch.Size, label: str = "") -> nn.Module:
    """Map student features to the teacher's shape: identity, Linear on the last (or only)
    feature dimension, or a 1x1 conv on the channel dimension of NC* feature maps."""
    if s_shape == t_shape:
        return nn.Identity()
    if len(s_shape) == len(t_shape) == 2 or (len(s_shape) == len(t_shape) == 3
                                             and s_shape[:-1] == t_shape[:-1]):
        return nn.Linear(s_shape[-1], t_shape[-1], bias=False)
    if len(s_shape) == len(t_shape) in (3, 4) and s_shape[2:] == t_shape[2:]:
        conv = nn.Conv1d if len(s_shape) == 3 else nn.Conv2d
        return conv(s_shape[1], t_shape[1], 1, bias=False)
    raise RecipeError(f"distill: cannot map features {label} of shape {tuple(s_shape)} onto "
                      f"{tuple(t_shape)}; pick layers with the same spatial size")


def derive_student_by_depth(teacher: nn.Module, keep: list[int] | Literal["alternate"] = "alternate",
                            *, example_inputs: tuple[torch.Tensor, ...],
                            container: str | None = None) -> nn.Module:
    """A deep copy of ``teacher`` with blocks dropped from an nn.Sequential / nn.ModuleList.

    Only blocks whose input and output shapes are equal can go (the next block then sees
    what it always saw). ``'alternate'`` keeps every other droppable block, starting with
    the first; a list keeps exactly those indices of the container.
    """
    return _drop_blocks(teacher, depth_plan(teacher, keep, example_inputs=example_inputs,
                                            container=container))


def depth_plan(model: nn.Module, keep: list[int] | Literal["alternate"], *,
               example_inputs: tuple[torch.Tensor, ...], container: str | None = None,
               ) -> dict[str, Any]:
    """Which container and which of its blocks :func:`derive_student_by_depth` drops."""
    droppable = _droppable_blocks(model, example_inputs)
    if container is None:
        ranked = sorted(droppable.items(), key=lambda kv: -len(kv[1]))
        if not ranked or len(ranked[0][1]) < 2:
            raise RecipeError("distill: no nn.Sequential/nn.ModuleList with at least two "
                              "shape-preserving blocks; give a student model instead")
        container = ranked[0][0]
    if container not in droppable:
        raise RecipeError(f"distill: {container!r} is not an nn.Sequential/nn.ModuleList of "
                          f"the model; candidates: {', '.join(droppable) or 'none'}")
    size = len(model.get_submodule(container))
    ok = droppable[container]
    if keep == "alternate":
        dropped = ok[1::2]
    else:
        if any(not 0 <= i < size for i in keep):
            raise RecipeError(f"distill: keep_blocks {keep} out of range for {container!r} "
                              f"({size} blocks)")
        dropped = [i for i in range(size) if i not in keep]
        bad = [i for i in dropped if i not in ok]
        if bad:
            raise RecipeError(f"distill: blocks {bad} of {container!r} change the tensor shape "
                              f"and cannot be dropped; droppable blocks: {ok}")
    return {"container": container, "blocks": size, "dropped": dropped}


def _droppable_blocks(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                      ) -> dict[str, list[int]]:
    """For each Sequential/ModuleList: indices of children run once with out.shape == in.shape."""
    seen: dict[nn.Module, list[bool]] = {}

    def hook(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        # The block's main input: the first positional tensor, or hidden_states=... (Hugging
        # Face layers); its main output: the output tensor, or the first of a tuple.
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
        y = out[0] if isinstance(out, (tuple, list)) and out else out
        same = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
        seen.setdefault(m, []).append(same)

    containers = {n: m for n, m in model.named_modules()
                  if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) >= 2}
    run_with_hooks(model, [c for m in containers.values() for c in m], hook, example_inputs, with_kwargs=True)
    return {n: [i for i, c in enumerate(m) if seen.get(c) == [True]] for n, m in containers.items()}


def _drop_blocks(model: nn.Module, plan: dict[str, Any]) -> nn.Module:
    student = copy.deepcopy(model)
    name, dropped = plan["container"], set(plan["dropped"])
    old = student.get_submodule(name)
    if isinstance(old, nn.Sequential):
        # Keep the original child names so state_dict keys and feature mappings still match.
        new: nn.Module = nn.Sequential(OrderedDict(
            (k, c) for i, (k, c) in enumerate(old.named_children()) if i not in dropped))
    else:
        new = nn.ModuleList([c for i, c in enumerate(old) if i not in dropped])
    if not name:  # the model itself is the container
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(student.get_submodule(parent_name) if parent_name else student, child, new)
    _update_layer_count(student, name, len(old), len(new))
    return student


def _update_layer_count(student: nn.Module, container: str, before: int, after: int) -> None:
    """Hugging Face models read the block count from ``config.num_hidden_layers`` (head masks,
    caches, ``save_pretrained``): set it on the container's owners that hold ``before``."""
    parts = container.split(".")
    for depth in range(len(parts)):
        owner = student.get_submodule(".".join(parts[:depth]))
        config = getattr(owner, "config", None)
        if getattr(config, "num_hidden_layers", None) == before:
            config.num_hidden_layers = after
