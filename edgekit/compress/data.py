"""The data a compression method trains and evaluates on.

One small frozen container, :class:`TrainData`, so every method (fine-tuning after pruning,
distillation, QAT) sees the same, seeded, reproducible minibatches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekit.compress.errors import RecipeError

if TYPE_CHECKING:
    from edgekit.context import BuildContext

# A model's inputs: one tensor, or a tuple of tensors (multi-input models, e.g. token ids and
# attention mask) that share the sample dimension; a tuple is passed as ``model(*xs)``.
Inputs = torch.Tensor | tuple[torch.Tensor, ...]


class Task(str, Enum):
    """What the model's output means; picks the task loss and the quality metric."""

    CLASSIFICATION = "classification"  # logits + integer labels: cross-entropy, top-1
    REGRESSION = "regression"  # float targets: MSE, output cosine
    EMBEDDING = "embedding"  # no targets: only a teacher can supervise, output cosine


@dataclass(frozen=True)
class TrainData:
    """Tensors for fine-tuning and evaluation (all on CPU, first dimension = samples).

    Attributes:
        x_train: model inputs used for training / calibration: one tensor, or a tuple of
            tensors in the model's argument order (multi-input models) with the same first
            dimension.
        y_train: targets for ``x_train``; integer class ids for classification, float
            targets for regression, ``None`` when only a teacher can provide labels
            (calibration inputs).
        x_eval: held-out inputs for the reports (same form as ``x_train``); ``None`` reuses
            ``x_train``.
        y_eval: targets for ``x_eval``; needed for top-1 in the reports.
        task: loss/metric hint; ``None`` infers it: classification when ``y_train`` holds
            integers, regression when it holds floats, embedding when there are no labels.
        batch_size: minibatch size for every training loop.
        seed: seeds shuffling (and the weight init of adapters), so runs are reproducible.
        trim_padding: index (in the input tuple) of an attention mask ``[N, T]``: training
            minibatches are cut to their longest real sequence (every ``[N, T]`` input loses
            the columns where all masks are 0). Only for models whose outputs do not change
            (see :func:`padding_trim_is_exact`); ``None`` keeps full-length inputs.
        on_batch: called after every training step as ``on_batch(epoch, epochs, batch,
            batches, loss)`` (0-based epoch, 1-based batch): progress for long runs.
    """

    x_train: Inputs
    y_train: torch.Tensor | None = None
    x_eval: Inputs | None = None
    y_eval: torch.Tensor | None = None
    task: Task | None = None
    batch_size: int = 64
    seed: int = 0
    trim_padding: int | None = None
    on_batch: Callable[[int, int, int, int, float], None] | None = field(default=None, repr=False, compare=False)
    _resolved_task: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("x_train", "x_eval"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_pair("x_train", self.x_train, "y_train", self.y_train)
        if self.x_eval is not None:
            _check_pair("x_eval", self.x_eval, "y_eval", self.y_eval)
            if len(as_tuple(self.x_eval)) != len(as_tuple(self.x_train)):
                raise RecipeError("TrainData.x_eval must hold as many input tensors as x_train")
        elif self.y_eval is not None:
            raise RecipeError("TrainData has y_eval but no x_eval; pass both or neither")
        if self.trim_padding is not None and not 0 <= self.trim_padding < len(as_tuple(self.x_train)):
            raise RecipeError(f"TrainData.trim_padding={self.trim_padding} is not an input index")
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

    @property
    def multi_input(self) -> bool:
        """Whether the inputs are a tuple of tensors (``model(*xs)``)."""
        return isinstance(self.x_train, tuple)

    def eval_split(self) -> tuple[Inputs, torch.Tensor | None]:
        """``(x, y)`` for reports: the eval split when given, else the training split."""
        if self.x_eval is not None:
            return self.x_eval, self.y_eval
        return self.x_train, self.y_train

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """A one-sample input tuple, for graph tracing (Torch-Pruning, ONNX export)."""
        return as_tuple(take(self.x_train, slice(0, 1)))

    @classmethod
    def from_calibration(cls, x: Inputs, *, seed: int = 0) -> TrainData:
        """Unlabelled calibration inputs: only distillation from a teacher can use them."""
        return cls(x_train=x, seed=seed)

    @classmethod
    def from_build(cls, ctx: BuildContext) -> TrainData:
        """A build's training data: labelled train/eval splits when the calibration set has
        them, else calibration inputs with the uncompressed model as the only label source.

        The model file's ``train_data`` hook wins over the calibration set. An unlabelled
        ``train`` split (e.g. the text set's extra sentences) is training input too, together
        with the calibration inputs: the teacher labels both. Reports use the ``eval`` split
        (``heldout`` of a text set: measured, never trained on) when present, else
        ``verification``. Multi-input models get a tuple of tensors in input order.
        """
        from edgekit.options import QualitySplit

        progress = training_progress(ctx.reporter.info)
        part = QualitySplit(ctx.options.quality_split)  # a search trial sees its half only, never the held-out one
        if "train_data" in ctx.hooks:
            x_train, y_train, x_eval, y_eval = ctx.hooks["train_data"]()
            return cls(x_train, y_train, _part(x_eval, part), part.take(y_eval), seed=ctx.options.seed, on_batch=progress)
        cal, names, seed = ctx.calibration, [s.name for s in ctx.inputs], ctx.options.seed
        train = cal.train_samples()
        if train is not None and cal.train_labels is not None:
            return cls(_inputs(train, names), _labels(cal.train_labels), _part(_inputs(cal.eval, names), part),
                       _labels(part.take(cal.eval_labels)), seed=seed, on_batch=progress)
        x_train = _inputs(cal.calibration, names)
        if train is not None:
            x_train = _concat(_inputs(train, names), x_train)
        x_eval = _part(_inputs(cal.eval if cal.eval is not None else cal.verification, names), part)
        return cls(x_train, x_eval=x_eval, seed=seed, trim_padding=_trim_padding(ctx.model, x_train, names),
                   on_batch=progress)


def training_progress(info: Callable[[str], None], every_s: float = 20.0) -> Callable[[int, int, int, int, float], None]:
    """An ``on_batch`` callback passing epoch, batch, loss and time left to ``info`` every
    ``every_s`` seconds: distilling on the large text set runs for tens of minutes."""
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
        info(f"training: epoch {epoch + 1}/{epochs}, batch {batch}/{batches} ({done:.0%}), "
             f"loss {loss:.4f}, about {left / 60:.0f} min left")

    return on_batch


def _tensor(samples: dict[str, np.ndarray], name: str) -> torch.Tensor:
    """``[N, 1, *shape]`` build samples -> ``[N, *shape]`` training tensor."""
    x = samples[name]
    return torch.from_numpy(np.ascontiguousarray(x.reshape((-1,) + x.shape[2:])))


def _labels(y: np.ndarray | None) -> torch.Tensor | None:
    return None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))


def _inputs(samples: dict[str, np.ndarray] | None, names: list[str]) -> Inputs | None:
    """One training tensor for a single-input model, else a tuple in the model's input order."""
    if samples is None:
        return None
    if len(names) == 1:
        return _tensor(samples, names[0])
    return tuple(_tensor(samples, n) for n in names)


def _part(x: Inputs | None, part: Any) -> Inputs | None:
    """``part`` (a :class:`~edgekit.options.QualitySplit`) of eval inputs, per tensor of a tuple."""
    if x is None or isinstance(x, torch.Tensor):
        return part.take(x)
    return tuple(part.take(t) for t in x)


def _concat(a: Inputs, b: Inputs) -> Inputs:
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    return torch.cat([a, b])


def _trim_padding(model: Any, x_train: Inputs, names: list[str]) -> int | None:
    """Token models with an ``attention_mask`` input train on minibatches cut to their longest
    sentence (several times faster on short sentences) when that provably leaves the model's
    outputs unchanged; models with fixed-length parts keep the full padded length."""
    if len(names) < 2 or "attention_mask" not in names or model is None:
        return None
    index = names.index("attention_mask")
    return index if padding_trim_is_exact(model, x_train, index) else None


def as_tuple(x: Inputs) -> tuple[torch.Tensor, ...]:
    """The inputs as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    return x if isinstance(x, tuple) else (x,)


def num_samples(x: Inputs) -> int:
    """The size of the shared sample dimension."""
    return len(as_tuple(x)[0])


def take(x: Inputs, index: Any) -> Inputs:
    """Index (slice, index tensor) every input along the sample dimension; keeps the form."""
    if isinstance(x, tuple):
        return tuple(t[index] for t in x)
    return x[index]


def call(model: Any, x: Inputs) -> Any:
    """Run ``model`` on one input tensor or on a tuple of them (``model(*xs)``)."""
    return model(*x) if isinstance(x, tuple) else model(x)


def _check_pair(xn: str, x: Inputs, yn: str, y: torch.Tensor | None) -> None:
    """Reject empty or misaligned input tensors, or labels whose count differs from the inputs."""
    parts = x if isinstance(x, tuple) else (x,)
    if not parts or any(not isinstance(t, torch.Tensor) or t.ndim == 0 or len(t) == 0 for t in parts):
        raise RecipeError(f"TrainData.{xn} must be a non-empty tensor with a sample dimension "
                          "(or a tuple of them)")
    if len({len(t) for t in parts}) > 1:
        raise RecipeError(f"TrainData.{xn} tensors have different sample counts "
                          f"{[len(t) for t in parts]}; every input needs one row per sample")
    if y is not None and len(y) != len(parts[0]):
        raise RecipeError(f"TrainData.{yn} has {len(y)} samples but {xn} has {len(parts[0])}; "
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


# Length bucketing: batches are formed within windows of this many batches of shuffled samples.
# Wide enough that most batches hold sentences of nearly one length (trimming then removes almost
# all padding: the text set's sentences average 21 real tokens of 64), narrow enough that
# batches stay well mixed.
BUCKET_WINDOW = 50


def iterate_minibatches(
    x: Inputs,
    y: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator,
    trim_padding: int | None = None,
) -> Iterator[tuple[Inputs, torch.Tensor | None]]:
    """One epoch of shuffled minibatches ``(xb, yb)``; ``yb`` is ``None`` without labels.
    ``xb`` has the form of ``x`` (a tensor, or a tuple of aligned tensors). When
    ``trim_padding`` names the attention-mask input, batches group samples of similar length
    (:func:`batch_order`) and each is cut to its longest real sequence."""
    for idx in batch_order(x, batch_size, generator, trim_padding):
        xb = take(x, idx)
        yield (trim_to_mask(xb, trim_padding) if trim_padding is not None else xb), \
            (y[idx] if y is not None else None)


def batch_order(x: Inputs, batch_size: int, generator: torch.Generator,
                mask_index: int | None = None) -> list[torch.Tensor]:
    """The sample indices of each minibatch of one epoch: a seeded shuffle; with an attention
    mask, samples are sorted by real length within windows of ``BUCKET_WINDOW`` batches and the
    batches shuffled again (length bucketing, as in fairseq/Hugging Face ``group_by_length``)."""
    n = num_samples(x)
    order = torch.randperm(n, generator=generator)
    mask = as_tuple(x)[mask_index] if mask_index is not None else None
    if mask is None or mask.ndim != 2:
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]
    lengths = mask.ne(0).sum(dim=1)
    batches = []
    window = batch_size * BUCKET_WINDOW
    for s in range(0, n, window):
        chunk = order[s:s + window]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def trim_to_mask(x: Inputs, mask_index: int) -> Inputs:
    """Drop the trailing sequence positions that are padding (mask 0) in every sample: every
    ``[N, T]`` input is cut to ``[N, L]``, L = 1 + the last position any mask marks as real."""
    parts = as_tuple(x)
    mask = parts[mask_index]
    if mask.ndim != 2:
        return x
    real = mask.ne(0).any(dim=0).nonzero()
    length = int(real.max()) + 1 if len(real) else 1
    if length == mask.shape[1]:
        return x
    cut = tuple(t[:, :length] if t.ndim == 2 and t.shape[1] == mask.shape[1] else t for t in parts)
    return cut if isinstance(x, tuple) else cut[0]


def padding_trim_is_exact(model: Any, x: Inputs, mask_index: int, *, samples: int = 4,
                          tolerance: float = 1e-4) -> bool:
    """Whether ``model`` gives the same outputs on inputs cut to their real length (sample by
    sample) as on the full padded ones: true for attention-masked encoders with pooling over
    the mask, false for models with fixed-length parts (position tables added whole, flatten)."""
    def first(out: Any) -> torch.Tensor:
        while isinstance(out, (tuple, list)) or isinstance(out, dict):
            out = next(iter(out.values())) if isinstance(out, dict) else out[0]
        return out

    was_training, checked = model.training, 0
    model.eval()
    try:
        with torch.no_grad():
            for i in range(num_samples(x)):
                one = take(x, slice(i, i + 1))
                cut = trim_to_mask(one, mask_index)
                if cut is one:
                    continue
                full, short = first(call(model, one)), first(call(model, cut))
                if full.shape != short.shape or \
                        float((full - short).abs().max()) > tolerance * max(1.0, float(full.abs().max())):
                    return False
                checked += 1
                if checked == samples:
                    break
        return checked > 0  # nothing to cut in any sample: nothing was shown
    except Exception:  # noqa: BLE001 - a shape error means the model needs the full length
        return False
    finally:
        model.train(was_training)
