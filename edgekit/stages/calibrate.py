"""Calibration and reference stages: the data the model is fitted to, and its reference outputs.

The reference is the PyTorch model itself (or, for ONNX input, onnxruntime on the source file):
every artifact is verified against it on held-out samples.
"""
from __future__ import annotations

import numpy as np

from edgekit import calibration
from edgekit.context import BuildContext
from edgekit.errors import ModelSpecError
from edgekit.stages.base import Stage
from edgekit.tensors import TensorSpec


def reference_outputs(ctx: BuildContext, samples: dict[str, np.ndarray], model: object = None) -> dict[str, np.ndarray]:
    """Run the model being converted (or the torch ``model`` given: the uncompressed original)
    on ``samples`` (``[N, *shape]`` per input), one at a time because the exported graph has a
    static batch."""
    count = len(next(iter(samples.values())))
    rows = [_run_one(ctx, {k: v[i] for k, v in samples.items()}, model or ctx.model) for i in range(count)]
    return {spec.name: np.stack([r[j] for r in rows]) for j, spec in enumerate(ctx.outputs)}


def _run_one(ctx: BuildContext, sample: dict[str, np.ndarray], model: object) -> list[np.ndarray]:
    if model is None:
        return _onnx_session(ctx).run(None, sample)
    import torch

    from edgekit.stages.load import _flatten_outputs

    args = [torch.from_numpy(np.ascontiguousarray(sample[s.name])) for s in ctx.inputs]
    with torch.no_grad():
        return [t.detach().float().numpy() for t in _flatten_outputs(model(*args))]


_SESSIONS: dict[str, object] = {}


def _onnx_session(ctx: BuildContext):
    import onnxruntime as ort

    key = str(ctx.source_onnx)
    if key not in _SESSIONS:
        _SESSIONS.clear()
        _SESSIONS[key] = ort.InferenceSession(key, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


class Calibrate(Stage):
    """Load the calibration set and check it fits the inputs."""

    name = "calibrate"
    description = "loading calibration data"

    def run(self, ctx: BuildContext) -> None:
        ctx.calibration = calibration.resolve(ctx.options.calibration, ctx.inputs, self._default(ctx), ctx.tokenize)
        if ctx.task is None and ctx.calibration.task == "classification":
            ctx.task = "classification"
        limit = ctx.options.golden_samples
        held_out = {k: v[:limit] for k, v in ctx.calibration.verification.items()}
        ctx.calibration = _replace_verification(ctx.calibration, held_out)
        ctx.reporter.info(f"calibration set {ctx.calibration.name!r}: "
                          f"{len(next(iter(ctx.calibration.calibration.values())))} calibration, "
                          f"{len(next(iter(held_out.values())))} held-out samples")

    @staticmethod
    def _default(ctx: BuildContext) -> str | None:
        if ctx.default_calibration:
            return ctx.default_calibration
        # Three-channel images: the bundled real-photo set is a sensible default.
        first = ctx.inputs[0]
        if len(ctx.inputs) == 1 and len(first.shape) == 4 and 3 in (first.shape[1], first.shape[-1]):
            return "photos"
        return None


class Reference(Stage):
    """Reference outputs of the model that is converted (after compression, if any): every
    artifact is verified against them, so verification measures conversion fidelity, and the
    compression report measures what compression cost against the original."""

    name = "reference"
    description = "computing reference outputs"

    def run(self, ctx: BuildContext) -> None:
        ctx.reference = reference_outputs(ctx, ctx.calibration.verification)
        _refuse_non_finite(ctx.reference)
        # ONNX inputs may declare unknown output dims; the reference run knows them.
        ctx.outputs = [TensorSpec(s.name, tuple(ctx.reference[s.name].shape[1:]), s.dtype) for s in ctx.outputs]


def _refuse_non_finite(reference: dict) -> None:
    """NaN/Inf in the model's own outputs makes every comparison meaningless (and made onnx2tf
    crash): refuse the model before any conversion."""
    for name, values in reference.items():
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise ModelSpecError(f"the model's output {name!r} is NaN or Inf on {int(bad.sum())} of {len(values)} verification samples",
                                 "fix the model (or its weights) so it gives finite outputs on the calibration data")


def _replace_verification(cal: calibration.CalibrationSet, held_out: dict) -> calibration.CalibrationSet:
    from dataclasses import replace

    return replace(cal, verification=held_out)
