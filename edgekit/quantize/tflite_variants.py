"""TFLite variants of a transformer from the SavedModel that onnx2tf writes.

onnx2tf (``onnx2tf -i model.onnx -o DIR``) writes ``DIR/saved_model.pb`` + ``variables/``
beside its ``*_float32.tflite``; TF's own ``TFLiteConverter.from_saved_model`` then gives the
variants onnx2tf does not expose well for token-input models:

- dynamic-range int8 (int8 weights, float activations quantized per op at run time, no
  dataset): on all-MiniLM-L6-v2 cosine 0.9988 and 2.2x faster than fp32 (GUIDE section 2),
  although XNNPACK does not run it (fine for FC-heavy transformers, slow for conv nets);
- int8 with float fallback (calibrated int8 for the weight ops, float for the sensitive ones;
  float or integer I/O: the image path's ``model_int8.tflite`` for graphs with LayerNorm,
  Softmax or GELU takes the profile's integer I/O);
- fp16 weights (half the bytes, dequantized to fp32 at load on CPUs without fp16 arithmetic).

``convert_onnx`` is the one onnx2tf driver (the build's TFLite stage and the tests use it): it
runs onnx2tf in its own process (its global name counters and prints stay out of ours) and
always passes ``-cind`` calibration data for every input, so it never tries to download its
sample images.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SENSITIVE_TFLITE_OPS", "Int8FallbackOptions", "convert_onnx", "dynamic_range_cli", "int8_float_fallback_cli",
           "nhwc", "onnx2tf_cli", "tflite_dynamic_range", "tflite_fp16", "tflite_int8_float_fallback"]


# The file onnx2tf downloads for its self-check when every input is an RGB image.
_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_ONNX2TF_HINT = "check the model's ops are supported by onnx2tf, or disable TFLite in the profile"


def nhwc(x: np.ndarray) -> np.ndarray:
    """Calibration samples ``[N, 1, C, H, W]`` -> ``[N, H, W, C]`` as onnx2tf's -cind expects
    (``[N, 1, ...]`` -> ``[N, ...]`` for other ranks)."""
    x = x.reshape((len(x),) + x.shape[2:]) if x.ndim >= 3 and x.shape[1] == 1 else x
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _offline_sample(work: Path, first: np.ndarray) -> None:
    """Write the sample file onnx2tf would download, from our own calibration images."""
    x = nhwc(first.astype(np.float32))
    if x.ndim == 4 and x.shape[-1] == 3:
        import tensorflow as tf  # onnx2tf imports it anyway

        resized = tf.image.resize(x[:20], (128, 128)).numpy().astype(np.float32)
        reps = int(np.ceil(20 / len(resized)))
        np.save(work / _ONNX2TF_SAMPLE, np.concatenate([resized] * reps)[:20])


def onnx2tf_cli() -> None:
    """onnx2tf's command line on ``sys.argv`` (what :func:`convert_onnx` runs isolated)."""
    from onnx2tf.onnx2tf import main

    sys.exit(main())


def dynamic_range_cli() -> None:
    """:func:`tflite_dynamic_range` on ``sys.argv``: SAVED_MODEL_DIR OUTPUT (run isolated by the build)."""
    tflite_dynamic_range(*sys.argv[1:3])


def convert_onnx(onnx_path: str | Path, work: str | Path, calibration: dict[str, np.ndarray], *,
                 int8_io: str | None = None, per_channel: bool = True, extra_args: tuple[str, ...] = ()) -> Path:
    """Run onnx2tf on ``onnx_path`` into ``work`` (SavedModel + ``*_float32.tflite``/``*_float16.tflite``,
    and with ``int8_io`` the full-integer ``*_integer_quant.tflite`` with that I/O dtype, weights
    ``per_channel`` or per tensor), in its
    own process (:func:`edgekit.isolated.run_tool`). The build's and the tests' one driver.

    ``calibration`` maps every ONNX input name, in input order, to samples ``[N, 1, ...]``; they are
    handed over as ``-cind`` (mean 0, std 1), and the sample file onnx2tf would download for RGB
    inputs is written from them, so onnx2tf never goes online. ``extra_args`` go to onnx2tf as
    given. Returns ``work``.
    """
    from edgekit.isolated import run_tool

    out = Path(work)
    out.mkdir(parents=True, exist_ok=True)
    # -rtpo Erf: GELU's Erf has no TFLite builtin (it becomes a Flex op no runtime here has);
    # onnx2tf's pseudo-op rewrite expresses it in builtins instead
    args = ["-i", str(onnx_path), "-o", str(out), "-coion", "-n", "-rtpo", "Erf", *extra_args]
    for index, (name, samples) in enumerate(calibration.items()):
        path = out / f"calib_{index}.npy"
        np.save(path, nhwc(samples.astype(np.float32)))
        args += ["-cind", name, str(path), "0.0", "1.0"]
    if int8_io:
        quant_io = int8_io if int8_io != "float32" else "int8"  # float I/O file is written either way
        args += ["-oiqt", "-iqd", quant_io, "-oqd", quant_io, "-qt", "per-channel" if per_channel else "per-tensor"]
    _offline_sample(out, next(iter(calibration.values())))
    run_tool(onnx2tf_cli, args, out, "onnx2tf", _ONNX2TF_HINT)
    return out


def _converter(saved_model_dir: str | Path):
    import tensorflow as tf

    return tf, tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))


def _write(converter, output: str | Path) -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    return path


def tflite_dynamic_range(saved_model_dir: str | Path, output: str | Path) -> Path:
    """Dynamic-range int8: ``optimizations=[Optimize.DEFAULT]`` and no representative dataset."""
    tf, converter = _converter(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _write(converter, output)


def tflite_fp16(saved_model_dir: str | Path, output: str | Path) -> Path:
    """fp16 weights: ``Optimize.DEFAULT`` with ``target_spec.supported_types=[tf.float16]``."""
    tf, converter = _converter(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _write(converter, output)


# TFLite op types kept float by default in the int8 variant: normalisation (LayerNorm lowers to
# MEAN/SQUARED_DIFFERENCE/RSQRT/SUB/MUL/ADD), attention probabilities, GELU, the pooling
# SUM/DIV/MAXIMUM, the residual ADDs, the mask SELECT_V2 and attention's activation x activation
# BATCH_MATMULs. What stays int8: FULLY_CONNECTED (the weights) and GATHER (the embeddings).
SENSITIVE_TFLITE_OPS = ("SOFTMAX", "ADD", "SUB", "MUL", "DIV", "MEAN", "SUM", "SQUARED_DIFFERENCE", "RSQRT", "GELU",
                        "BATCH_MATMUL", "SELECT_V2", "MAXIMUM")


@dataclass(frozen=True)
class Int8FallbackOptions:
    """Options for :func:`tflite_int8_float_fallback`.

    Why selective: letting the converter quantize every op that has an int8 kernel ruins a
    BERT-style model (all-MiniLM-L6-v2: cosine 0.35): the additive attention mask holds
    float32-min values, which no int8 scale survives, and LayerNorm/Softmax/GELU lose their
    precision. TF's QuantizationDebugger can keep op types and single nodes float
    (``denylisted_ops`` / ``denylisted_nodes``); measured on MiniLM (16 held-out sentences):
    sensitive ops float 0.92 / 0.88 cosine, plus the GELU-fed FULLY_CONNECTEDs float 0.993 / 0.990
    (0.38x fp32 bytes, since those weights stay float).

    Attributes:
        samples: calibration samples fed to the converter (more is slower; 32-64 suffice).
        float_ops: TFLite op types kept float (empty: quantize everything the converter can).
        float_gelu_fed: also keep FULLY_CONNECTED nodes whose input is a GELU output float.
        int16_activations: use the int16x8 scheme (int8 weights, int16 activations) instead:
            tolerant of wide activation ranges, but runs on TFLite's reference kernels (slow).
        io_dtype: ``float32`` (quantize/dequantize inside) or ``int8``/``uint8`` inputs and
            outputs, as a full-integer artifact has them (the image path takes the profile's).
    """

    samples: int = 32
    float_ops: tuple[str, ...] = SENSITIVE_TFLITE_OPS
    float_gelu_fed: bool = True
    int16_activations: bool = False
    io_dtype: str = "float32"


def _representative(calibration: dict[str, np.ndarray], count: int, signature_inputs: dict) -> Iterator[dict]:
    total = len(next(iter(calibration.values())))
    for i in range(min(count, total)):
        row = {}
        for name, spec in signature_inputs.items():
            key = name if name in calibration else next(k for k in calibration if name.startswith(k) or k.startswith(name))
            row[name] = calibration[key][i].astype(spec.dtype.as_numpy_dtype)
        yield row


def _gelu_fed_nodes(interpreter) -> list[str]:
    """Output tensor names of FULLY_CONNECTED ops fed (through (de)quantize/reshape) by GELU."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only op-graph view LiteRT exposes
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    made_by = {out: op for op in ops for out in op["outputs"]}

    def source(index: int, hops: int = 4) -> str | None:
        op = made_by.get(index)
        if op is None or hops == 0:
            return None
        return source(op["inputs"][0], hops - 1) if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "RESHAPE") else op["op_name"]

    return [names[op["outputs"][0]] for op in ops if op["op_name"] == "FULLY_CONNECTED" and source(op["inputs"][0]) == "GELU"]


def _calibrated_converter(tf, saved_model_dir: str | Path, calibration: dict[str, np.ndarray],
                          options: Int8FallbackOptions, inputs: dict):
    """A fresh TFLiteConverter for the int8 variant: calibrated on ``calibration``, int8 (or
    int16x8) builtins with float builtins as the fallback."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: _representative(calibration, options.samples, inputs)
    if options.int16_activations:
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.target_spec.supported_ops = ops
    return conv


def tflite_int8_float_fallback(saved_model_dir: str | Path, output: str | Path, calibration: dict[str, np.ndarray], *,
                               options: Int8FallbackOptions = Int8FallbackOptions()) -> Path:
    """int8 where TFLite has an int8 kernel and the op is not kept float, float elsewhere,
    calibrated on ``calibration`` (``{input_name: [N, 1, ...]}`` token inputs; float I/O)."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    inputs = dict(signature.structured_input_signature[1])

    def converter():
        return _calibrated_converter(tf, saved_model_dir, calibration, options, inputs)

    if not options.float_ops and not options.float_gelu_fed:
        plain = converter()
        if options.io_dtype != "float32":
            plain.inference_input_type = plain.inference_output_type = getattr(tf, options.io_dtype)
        return _write(plain, output)
    debug_data = lambda: _representative(calibration, 2, inputs)  # noqa: E731 - the debugger's own pass
    debug = tf.lite.experimental.QuantizationDebugOptions
    nodes: list[str] = []
    if options.float_gelu_fed:  # node names are only known after one quantized conversion
        first = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=debug_data,
                                                          debug_options=debug(denylisted_ops=list(options.float_ops)))
        nodes = _gelu_fed_nodes(first._quant_interpreter)  # noqa: SLF001
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if options.io_dtype != "float32":
        path.write_bytes(_quantize_integer_io(tf, converter(), options, nodes))
        return path
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=debug_data,
        debug_options=debug(denylisted_ops=list(options.float_ops), denylisted_nodes=nodes))
    path.write_bytes(debugger.get_nondebug_quantized_model())
    return path


def int8_float_fallback_cli() -> None:
    """:func:`tflite_int8_float_fallback` on ``sys.argv``: SAVED_MODEL_DIR OUTPUT SAMPLES_NPZ [IO_DTYPE]
    (run isolated by the build); no IO_DTYPE: the token path's float I/O, else the image path's
    integer I/O (GELU-fed FULLY_CONNECTEDs int8 too)."""
    saved_model_dir, output, samples = sys.argv[1:4]
    io_dtype = sys.argv[4] if len(sys.argv) > 4 else ""
    calibration = dict(np.load(samples, allow_pickle=False))
    options = Int8FallbackOptions(float_gelu_fed=False, io_dtype=io_dtype) if io_dtype else Int8FallbackOptions()
    tflite_int8_float_fallback(saved_model_dir, output, calibration, options=options)


def _quantize_integer_io(tf, converter, options: Int8FallbackOptions, nodes: list[str]) -> bytes:
    """Calibrate, then quantize with the deny-lists and integer I/O. The debugger above always
    returns float I/O; this is the same MLIR quantizer call it makes, with the I/O types set."""
    from tensorflow.lite.python.convert import mlir_quantize

    converter._experimental_calibrate_only = True  # noqa: SLF001 - TF's documented two-step path
    io_type = {"int8": tf.int8, "uint8": tf.uint8}[options.io_dtype]
    return mlir_quantize(converter.convert(), fully_quantize=True, input_data_type=io_type, output_data_type=io_type,
                         denylisted_ops=list(options.float_ops), denylisted_nodes=nodes)
