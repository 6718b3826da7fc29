"""TFLite stage: onnx2tf converts the cleaned ONNX graph to fp32, fp16 and full-integer int8.

onnx2tf was chosen over writing our own ONNX->TF lowering (or onnx-tf, unmaintained since 2022):
it is maintained, handles the NCHW->NHWC transposition that XNNPACK needs, and drives TF's own
TFLiteConverter for the int8 calibration. Two of its habits are fenced in here: it downloads
sample images for image-shaped inputs (we hand it our calibration data and a local copy of the
file it looks for, so a build never touches the network), and it prints a lot (silenced).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgekit.context import Artifact, BuildContext
from edgekit.errors import ConversionError
from edgekit.hostrun import TFLiteSession
from edgekit.isolated import run_tool
from edgekit.stages.base import Stage
from edgekit.targets import Precision

# The file onnx2tf downloads for its self-check when every input is an RGB image.
_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf output suffix per (precision, I/O dtype).
_SUFFIX = {"fp32": "_float32", "fp16": "_float16", ("int8", "float32"): "_integer_quant",
           ("int8", "int8"): "_full_integer_quant", ("int8", "uint8"): "_full_integer_quant"}


def _nhwc(x: np.ndarray) -> np.ndarray:
    """Calibration samples ``[N, 1, C, H, W]`` -> ``[N, H, W, C]`` as onnx2tf's -cind expects."""
    x = x.reshape((len(x),) + x.shape[2:]) if x.ndim >= 3 and x.shape[1] == 1 else x
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _offline_sample(work: Path, ctx: BuildContext) -> None:
    """Write the sample file onnx2tf would download, from our own calibration images."""
    first = next(iter(ctx.calibration.calibration.values()))
    x = _nhwc(first.astype(np.float32))
    if x.ndim == 4 and x.shape[-1] == 3:
        import tensorflow as tf  # onnx2tf imports it anyway

        resized = tf.image.resize(x[:20], (128, 128)).numpy().astype(np.float32)
        reps = int(np.ceil(20 / len(resized)))
        np.save(work / _ONNX2TF_SAMPLE, np.concatenate([resized] * reps)[:20])


def _dynamic_range(work: Path) -> Path:
    """Dynamic-range int8 from onnx2tf's SavedModel (TF's converter, weights int8, activations
    quantized at run time): the scheme that suits FC-heavy transformers on CPU."""
    target = work / "model_dynamic_range_int8.tflite"
    run_tool("import sys; from edgekit.quantize.tflite_variants import tflite_dynamic_range as f; f(sys.argv[1], sys.argv[2])",
             [str(work), str(target)], work, "TFLite dynamic-range conversion", "run with --debug for details")
    return target


def _int8_float_fallback(work: Path, ctx: BuildContext) -> Path:
    """int8 with LayerNorm/Softmax/GELU/pooling kept float (TF's quantization debugger deny-lists
    them): full int8 of a BERT-style graph measured cosine 0.35 on MiniLM, this 0.993."""
    target = work / "model_int8_fallback.tflite"
    samples = work / "fallback_calibration.npz"
    np.savez(samples, **ctx.calibration.calibration)
    code = ("import sys, numpy as np; from edgekit.quantize.tflite_variants import tflite_int8_float_fallback as f; "
            "f(sys.argv[1], sys.argv[2], dict(np.load(sys.argv[3], allow_pickle=False)))")
    run_tool(code, [str(work), str(target), str(samples)], work, "TFLite int8 (float fallback) conversion",
             "drop int8_fallback from the profile's token_precisions")
    return target


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
        self._convert(ctx, work, precisions)
        cfg = ctx.profile.tflite
        for precision in precisions:
            if precision == Precision.INT8_DYNAMIC:
                produced = _dynamic_range(work)
            elif precision == Precision.INT8_FALLBACK:
                produced = _int8_float_fallback(work, ctx)
            else:
                key = precision.value if precision != Precision.INT8 else ("int8", cfg.int8.io_dtype.value)
                produced = work / f"model{_SUFFIX[key]}.tflite"
            if not produced.is_file():
                raise ConversionError(f"onnx2tf did not produce a {precision.value} TFLite model", "run with --debug for its log")
            file = f"model_{precision.value}.tflite"
            shutil.copyfile(produced, ctx.bundle_dir / file)
            session = TFLiteSession(ctx.bundle_dir / file, ctx.inputs, ctx.outputs, threads=1)
            ctx.artifacts.append(Artifact(file, "tflite", precision.value, "litert", session.inputs, session.outputs))

    def _convert(self, ctx: BuildContext, work: Path, precisions: tuple[Precision, ...]) -> None:
        cfg = ctx.profile.tflite
        # -rtpo Erf: GELU's Erf has no TFLite builtin (it becomes a Flex op no runtime here has);
        # onnx2tf's pseudo-op rewrite expresses it in builtins instead
        args = ["-i", str(ctx.onnx_path), "-o", str(work), "-coion", "-n", "-rtpo", "Erf"]
        for index, spec in enumerate(ctx.inputs):
            path = work / f"calib_{index}.npy"
            np.save(path, _nhwc(ctx.calibration.calibration[spec.name].astype(np.float32)))
            args += ["-cind", spec.name, str(path), "0.0", "1.0"]
        if Precision.INT8 in precisions:
            io_dtype = cfg.int8.io_dtype.value
            quant_io = io_dtype if io_dtype != "float32" else "int8"  # float I/O file is written either way
            args += ["-oiqt", "-iqd", quant_io, "-oqd", quant_io]
        _offline_sample(work, ctx)
        run_tool("from onnx2tf.onnx2tf import main; import sys; sys.exit(main())", args, work, "onnx2tf",
                 "check the model's ops are supported by onnx2tf, or disable TFLite in the profile")
