"""The data a compression method trains and evaluates on.

One small frozen container, :class:`TrainData`, so every method (fine-tuning after pruning,
distillation, QAT) sees the same, seeded, reproducible minibatches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

import torch

from edgekit.compress.errors import RecipeError


class Task(str, Enum):
    """What the model's output means; picks the task loss and the quality metric."""

    CLASSIFICATION = "classification"  # logits + integer labels: cross-entropy, top-1
    REGRESSION = "regression"  # float targets: MSE, output cosine
    EMBEDDING = "embedding"  # no targets: only a teacher can supervise, output cosine


@dataclass(frozen=True)
class TrainData:
    """Tensors for fine-tuning and evaluation (all on CPU, first dimension = samples).

    Attributes:
        x_train: model inputs used for training / calibration.
        y_train: targets for ``x_train``; integer class ids for classification, float
            targets for regression, ``None`` when only a teacher can provide labels
            (calibration inputs).
        x_eval: held-out inputs for the reports; ``None`` reuses ``x_train``.
        y_eval: targets for ``x_eval``; needed for top-1 in the reports.
        task: loss/metric hint; ``None`` infers it: classification when ``y_train`` holds
            integers, regression when it holds floats, embedding when there are no labels.
        batch_size: minibatch size for every training loop.
        seed: seeds shuffling (and the weight init of adapters), so runs are reproducible.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor | None = None
    x_eval: torch.Tensor | None = None
    y_eval: torch.Tensor | None = None
    task: Task | None = None
    batch_size: int = 64
    seed: int = 0
    _resolved_task: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_pair("x_train", self.x_train, "y_train", self.y_train)
        if self.x_eval is not None:
            _check_pair("x_eval", self.x_eval, "y_eval", self.y_eval)
        elif self.y_eval is not None:
            raise RecipeError("TrainData has y_eval but no x_eval; pass both or neither")
        if self.batch_size < 1:
            raise RecipeError(f"TrainData.batch_size must be >= 1, got {self.batch_size}")
        task = Task(self.task) if self.task is not None else _infer_task(self.y_train)
        object.__setattr__(self, "_resolved_task", task)

    @property
    def resolved_task(self) -> Task:
        """The task given, or the one inferred from the labels."""
        return self._resolved_task

    @property
    def has_labels(self) -> bool:
        """Whether training can use ground-truth targets (else a teacher must label)."""
        return self.y_train is not None

    def eval_split(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, y)`` for reports: the eval split when given, else the training split."""
        if self.x_eval is not None:
            return self.x_eval, self.y_eval
        return self.x_train, self.y_train

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """A one-sample input tuple, for graph tracing (Torch-Pruning, ONNX export)."""
        return (self.x_train[:1],)

    @classmethod
    def from_calibration(cls, x: torch.Tensor, *, seed: int = 0) -> TrainData:
        """Unlabelled calibration inputs: only distillation from a teacher can use them."""
        return cls(x_train=x, seed=seed)


def _check_pair(xn: str, x: torch.Tensor, yn: str, y: torch.Tensor | None) -> None:
    """Reject an empty input tensor or labels whose count differs from the inputs."""
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) == 0:
        raise RecipeError(f"TrainData.{xn} must be a non-empty tensor with a sample dimension")
    if y is not None and len(y) != len(x):
        raise RecipeError(f"TrainData.{yn} has {len(y)} samples but {xn} has {len(x)}; "
                          "pass one target per input")


def _infer_task(y: torch.Tensor | None) -> Task:
    if y is None:
        return Task.EMBEDDING
    if y.dtype.is_floating_point:
        return Task.REGRESSION
    return Task.CLASSIFICATION


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed (shuffling never touches the global RNG)."""
    return torch.Generator().manual_seed(seed)


def iterate_minibatches(
    x: torch.Tensor,
    y: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch of shuffled minibatches ``(xb, yb)``; ``yb`` is ``None`` without labels."""
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], (y[idx] if y is not None else None)
