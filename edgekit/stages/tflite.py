"""TFLite stage: onnx2tf converts the cleaned ONNX graph to fp32, fp16 and full-integer int8.

onnx2tf was chosen over writing our own ONNX->TF lowering (or onnx-tf, unmaintained since 2022):
it is maintained, handles the NCHW->NHWC transposition that XNNPACK needs, and drives TF's own
TFLiteConverter for the int8 calibration. Two of its habits are fenced in here: it downloads
sample images for image-shaped inputs (we hand it our calibration data and a local copy of the
file it looks for, so a build never touches the network), and it prints a lot (silenced).

Image models with LayerNorm, Softmax or GELU (vision transformers) get their int8 artifact
from the same float-fallback converter as the token path (those ops float, convolutions and
matrix products int8, the profile's integer I/O), decided from the ONNX graph's ops. Every
artifact is invoked once on a calibration sample here: one that its runtime cannot run is a
converter failure, reported in one line naming the artifact and the failing node.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from edgekit.context import Artifact, BuildContext
from edgekit.errors import ConversionError
from edgekit.isolated import run_tool
from edgekit.quantize.tflite_variants import convert_onnx, dynamic_range_cli, int8_float_fallback_cli, nhwc
from edgekit.stages.base import Stage
from edgekit.targets import Precision
from edgekit.verify.hostrun import TFLiteSession

# TFLite's runtime errors end with "Node number 71 (DIV) failed to invoke."
_FAILED_NODE = re.compile(r"Node number (\d+) \((\w+)\) failed to (\w+)")

# onnx2tf output suffix per (precision, I/O dtype).
_SUFFIX = {"fp32": "_float32", "fp16": "_float16", ("int8", "float32"): "_integer_quant",
           ("int8", "int8"): "_full_integer_quant", ("int8", "uint8"): "_full_integer_quant"}


def _dynamic_range(work: Path) -> Path:
    """Dynamic-range int8 from onnx2tf's SavedModel (TF's converter, weights int8, activations
    quantized at run time): the scheme that suits FC-heavy transformers on CPU."""
    target = work / "model_dynamic_range_int8.tflite"
    run_tool(dynamic_range_cli, [str(work), str(target)], work, "TFLite dynamic-range conversion",
             "run with --debug for details")
    return target


def _int8_float_fallback(work: Path, ctx: BuildContext, image_io: str | None = None) -> Path:
    """int8 with LayerNorm/Softmax/GELU/pooling kept float (TF's quantization debugger deny-lists
    them): full int8 of a BERT-style graph measured cosine 0.35 on MiniLM, this 0.993.

    ``image_io`` (the profile's int8 I/O dtype) makes the image path's ``model_int8.tflite``:
    NHWC samples, integer I/O, and the FULLY_CONNECTEDs after GELU int8 too (measured on the test
    ViT, digits eval: cosine 0.9996 either way, 63 KB instead of 73 KB)."""
    target = work / ("model_int8_image.tflite" if image_io else "model_int8_fallback.tflite")
    samples = work / "fallback_calibration.npz"
    count = ctx.profile.tflite.int8.calibration_samples
    calibration = {k: v[:count] for k, v in ctx.calibration.calibration.items()}
    if image_io:  # the SavedModel takes NHWC; one sample [1, H, W, C] per row
        calibration = {k: nhwc(v.astype(np.float32))[:, None] for k, v in calibration.items()}
    np.savez(samples, **calibration)
    hint = "remove int8 from the profile's tflite precisions" if image_io else "drop int8_fallback from the profile's token_precisions"
    run_tool(int8_float_fallback_cli, [str(work), str(target), str(samples), *([image_io] if image_io else [])], work,
             "TFLite int8 (float fallback) conversion", hint)
    return target


def _sensitive_ops(ctx: BuildContext) -> list[str]:
    """Ops of an image model's graph that full-integer TFLite must keep float (empty for CNNs)."""
    import onnx

    from edgekit.quantize.onnx_rewrites import int8_sensitive_ops

    return [] if ctx.token_inputs else int8_sensitive_ops(onnx.load(str(ctx.onnx_path)))


def _tflite_source(ctx: BuildContext, work: Path) -> Path:
    """The ONNX graph onnx2tf converts: image models' exact Erf-GELU becomes ``Gelu`` (TFLite's
    GELU builtin, which int8 can run; the Erf built from builtins cannot); others unchanged."""
    import onnx

    from edgekit.quantize.onnx_rewrites import fuse_erf_gelu, op_counts

    if ctx.token_inputs:
        return ctx.onnx_path
    model = onnx.load(str(ctx.onnx_path))
    if "Erf" not in op_counts(model):
        return ctx.onnx_path
    fused = fuse_erf_gelu(model)
    if "Gelu" not in op_counts(fused):
        return ctx.onnx_path
    path = ctx.scratch_dir / "tflite_source" / ctx.onnx_path.name  # onnx2tf names its outputs by this stem
    path.parent.mkdir(exist_ok=True)
    onnx.save(fused, str(path))
    return path


def smoke_test(path: Path, ctx: BuildContext) -> TFLiteSession:
    """Load ``path`` and invoke it on the first calibration sample; a runtime failure is the
    converter's (it wrote a model its runtime cannot run): ConversionError in one line."""
    try:
        session = TFLiteSession(path, ctx.inputs, ctx.outputs, threads=1)
        session.run({k: v[0] for k, v in ctx.calibration.calibration.items()})
    except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError with its own text
        raise ConversionError(_runtime_failure(path.name, exc),
                              "the converter wrote a model its runtime cannot run: remove that precision from the "
                              "profile's tflite precisions, or run with --debug") from exc
    return session


def _runtime_failure(name: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    found = _FAILED_NODE.search(text)
    where = f"node {found[1]} ({found[2]}) failed to {found[3]}" if found else type(exc).__name__
    detail = text[:found.start()].strip().rstrip(".") if found else text
    return f"{name} fails at run time on a calibration sample: {where}: {detail[:200]}"


class TFLiteConvert(Stage):
    """Produce ``model_<precision>.tflite`` for every TFLite precision in the profile."""

    name = "tflite"
    description = "converting to TFLite (onnx2tf)"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.profile.tflite.enabled

    def run(self, ctx: BuildContext) -> None:
        work = ctx.scratch_dir / "onnx2tf"
        work.mkdir()
        precisions = ctx.profile.precisions("tflite", ctx.token_inputs)
        cfg = ctx.profile.tflite
        image_io = cfg.int8.io_dtype.value if Precision.INT8 in precisions and _sensitive_ops(ctx) else None
        self._convert(ctx, work, precisions, full_int8=image_io is None)
        for precision in precisions:
            if precision == Precision.INT8_DYNAMIC:
                produced = _dynamic_range(work)
            elif precision == Precision.INT8_FALLBACK:
                produced = _int8_float_fallback(work, ctx)
            elif precision == Precision.INT8 and image_io:
                produced = _int8_float_fallback(work, ctx, image_io)
            else:
                key = precision.value if precision != Precision.INT8 else ("int8", cfg.int8.io_dtype.value)
                produced = work / f"model{_SUFFIX[key]}.tflite"
            if not produced.is_file():
                raise ConversionError(f"onnx2tf did not produce a {precision.value} TFLite model", "run with --debug for its log")
            file = f"model_{precision.value}.tflite"
            shutil.copyfile(produced, ctx.bundle_dir / file)
            session = smoke_test(ctx.bundle_dir / file, ctx)
            ctx.artifacts.append(Artifact(file, "tflite", precision.value, "litert", session.inputs, session.outputs))

    @staticmethod
    def _convert(ctx: BuildContext, work: Path, precisions: tuple[Precision, ...], full_int8: bool) -> None:
        scheme = ctx.profile.tflite.int8
        calibration = {spec.name: ctx.calibration.calibration[spec.name][:scheme.calibration_samples] for spec in ctx.inputs}
        int8_io = scheme.io_dtype.value if Precision.INT8 in precisions and full_int8 else None
        convert_onnx(_tflite_source(ctx, work), work, calibration, int8_io=int8_io, per_channel=scheme.per_channel)
