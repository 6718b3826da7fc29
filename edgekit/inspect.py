"""``edgekit inspect``: a model's ops and what the target's runtimes take, without a build.

It runs the first build stages (load, export, clean-up) and an fp32-only TFLite conversion in a
scratch folder, then the same compatibility checks a build writes into its reports.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekit.calibration import CalibrationSet
from edgekit.context import BuildContext
from edgekit.options import BuildOptions
from edgekit.stages import compat
from edgekit.stages.cleanup_onnx import CleanupOnnx
from edgekit.stages.export_onnx import ExportOnnx
from edgekit.stages.load import LoadModel
from edgekit.stages.tflite import TFLiteConvert
from edgekit.targets import Precision, load_target
from edgekit.tensors import TensorSpec


def _random_samples(inputs: list[TensorSpec], count: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {s.name: (rng.random((count, *s.shape)) if "float" in s.dtype else np.zeros((count, *s.shape))).astype(s.dtype)
            for s in inputs}


def inspect_model(model: str, *, target: str, inputs: tuple[TensorSpec, ...] = ()) -> dict:
    """Return ``{"model", "target", "inputs", "onnx": {...}, "tflite": {...}}`` for ``model``."""
    profile = load_target(target)
    fp32_only = dataclasses.replace(profile.tflite, precisions=(Precision.FP32,))
    profile = dataclasses.replace(profile, tflite=fp32_only)
    scratch = Path(tempfile.mkdtemp(prefix="edgekit-inspect-"))
    try:
        ctx = BuildContext(BuildOptions(target=target, model=model, inputs=inputs), profile, scratch / "bundle", scratch)
        ctx.bundle_dir.mkdir()
        for stage in (LoadModel(), ExportOnnx(), CleanupOnnx()):
            stage.run(ctx)
        samples = _random_samples(ctx.inputs)
        ctx.calibration = CalibrationSet("random", samples, samples)
        report = {"model": ctx.model_label, "target": profile.name, "inputs": [s.to_json() for s in ctx.inputs],
                  "onnx": compat.ort_report(ctx.onnx_path, profile.ort.provider, profile.ort.mobile_usability_check)}
        if profile.tflite.enabled:
            TFLiteConvert().run(ctx)
            report["tflite"] = compat.tflite_report(ctx.bundle_dir / "model_fp32.tflite", profile.tflite.delegate,
                                                    profile.tflite.delegate_ops)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def render(report: dict) -> str:
    """Plain-text view of :func:`inspect_model`'s result."""
    lines = [f"model: {report['model']}  target: {report['target']}",
             "inputs: " + ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))} {i['dtype']}" for i in report["inputs"]),
             "ONNX ops: " + ", ".join(f"{op.split(':')[-1]} x{n}" for op, n in report["onnx"]["ops"].items())]
    if "nnapi" in report["onnx"]:
        nn = report["onnx"]["nnapi"]
        lines.append(f"NNAPI (ORT estimate): {nn['supported_nodes']}/{nn['nodes']} nodes in {nn['partitions']} partition(s), "
                     f"unsupported: {', '.join(nn['unsupported_ops']) or 'none'} -> {nn['suitability']}")
    if "tflite" in report:
        t = report["tflite"]
        lines.append("TFLite ops: " + ", ".join(f"{op} x{n}" for op, n in t["ops"].items()))
        lines.append(f"{t['delegate']} delegate: {t['delegated_fraction'] * 100:.0f}% of ops; "
                     f"not taken: {', '.join(t['delegate_unsupported_ops']) or 'none'}")
    return "\n".join(lines)
