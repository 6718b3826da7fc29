"""ONNX Runtime stage: quantize every ORT precision of the profile, then ``.ort`` conversion.

The converters live in ``edgekit.quantize`` (``ort_static`` for image/float models with the
profile's int8 scheme, ``ort_static_transformer``/``ort_dynamic``/``ort_int4`` for token
models); this stage picks one per precision and records the artifacts.
"""
from __future__ import annotations

import functools
import runpy
import shutil
from pathlib import Path

from edgekit.context import Artifact, BuildContext
from edgekit.errors import ConversionError
from edgekit.isolated import captured, run_tool
from edgekit.quantize.ort_static import quantize_qdq, reduce_range_for, scheme_record
from edgekit.stages.base import Stage
from edgekit.targets import Precision
from edgekit.verify.hostrun import ORTSession

# ONNX Runtime's own .ort converter, run as its command line (``python -m ...``) in the child
_ORT_FORMAT = functools.partial(runpy.run_module, "onnxruntime.tools.convert_onnx_models_to_ort", run_name="__main__")


def reduce_range(ctx: BuildContext) -> bool:
    return reduce_range_for(ctx.profile.ort.int8)


def _quantize_transformer(ctx: BuildContext, precision: Precision, target: Path) -> None:
    """Token-input models: the sensitive ops (LayerNorm, Softmax, GELU, pooling) stay float in
    static int8; dynamic int8 and int4 weight-only need no activation calibration at all."""
    from edgekit.quantize.ort_dynamic import DynamicInt8Options, quantize_dynamic_int8
    from edgekit.quantize.ort_int4 import Int4Options, quantize_int4_weights
    from edgekit.quantize.ort_static_transformer import StaticTransformerOptions, quantize_static_transformer

    if precision == Precision.INT8_DYNAMIC:
        quantize_dynamic_int8(ctx.onnx_path, target, options=DynamicInt8Options(reduce_range=reduce_range(ctx)))
    elif precision == Precision.INT4:
        quantize_int4_weights(ctx.onnx_path, target, options=Int4Options(block_size=ctx.profile.ort.int4_block_size))
    else:
        options = StaticTransformerOptions(activation_type=ctx.profile.ort.int8.activation_type.value,
                                           per_channel=ctx.profile.ort.int8.per_channel, reduce_range=reduce_range(ctx))
        quantize_static_transformer(ctx.onnx_path, target, ctx.calibration.calibration, options=options)


def to_ort(ctx: BuildContext, onnx_file: Path) -> Path:
    """Convert to the ORT mobile format; keeps the ``required_operators.config`` for a
    reduced-size ORT build. Runs isolated with ASLR off so the .ort bytes are reproducible."""
    work = ctx.scratch_dir / f"ort_{onnx_file.stem}"
    work.mkdir()
    shutil.copyfile(onnx_file, work / onnx_file.name)
    run_tool(_ORT_FORMAT, [str(work), "--optimization_style", ctx.profile.ort.optimization_style], work,
             "ORT format conversion", "check the model loads in onnxruntime")
    produced = sorted(work.glob("*.ort"))
    if not produced:
        raise ConversionError(f"ORT format conversion produced nothing for {onnx_file.name}", "run with --debug")
    target = ctx.bundle_dir / f"{onnx_file.stem}.ort"
    shutil.copyfile(produced[0], target)
    configs = sorted(work.glob("*.config"))
    if configs:
        name = f"{onnx_file.stem}.required_operators.config"
        # the tool writes the absolute scratch path into a comment line: drop it (reproducibility)
        lines = [line for line in configs[0].read_text().splitlines() if not line.startswith("# - /")]
        (ctx.bundle_dir / name).write_text("\n".join(lines) + "\n")
        ctx.extra_files.append(name)
    return target


class ORTConvert(Stage):
    """Produce ``model_<precision>.onnx`` (+ ``.ort``) for every ORT precision in the profile."""

    name = "ort"
    description = "quantizing for ONNX Runtime"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.profile.ort.enabled

    def run(self, ctx: BuildContext) -> None:
        try:
            with captured():
                for precision in ctx.profile.precisions("ort", ctx.token_inputs):
                    self._one(ctx, precision)
                if ctx.qat_model is not None:
                    self._qat(ctx)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"onnxruntime conversion failed: {type(exc).__name__}: {str(exc)[:200]}",
                                  "run with --debug for details, or disable ORT in the profile") from exc

    def _one(self, ctx: BuildContext, precision: Precision) -> None:
        target = ctx.bundle_dir / f"model_{precision.value}.onnx"
        if precision == Precision.FP32:
            shutil.copyfile(ctx.onnx_path, target)
        elif precision == Precision.INT8 and not ctx.token_inputs:
            quantize_qdq(ctx.onnx_path, target, ctx.calibration.calibration, ctx.profile.ort.int8, ctx.scratch_dir)
        else:
            _quantize_transformer(ctx, precision, target)
        files = [target]
        # the ORT format has no int4 tensor type (measured: ORT 1.32 writes the .ort, then refuses
        # to load it: "Unsupported tensor data type ... Invalid ORT format model"): .onnx only
        if ctx.profile.ort.ort_format and precision != Precision.INT4:
            files.append(to_ort(ctx, target))
        for path in files:
            session = ORTSession(path, ctx.inputs, ctx.outputs, threads=1)
            ctx.artifacts.append(Artifact(path.name, path.suffix[1:], precision.value, "onnxruntime",
                                          session.inputs, session.outputs, quantization=scheme_record(ctx.profile.ort.int8, precision),
                                          reference_via=target.name if path != target else None))

    def _qat(self, ctx: BuildContext) -> None:
        """The QAT model exported with its own QDQ pairs (scales learned in training), beside
        the post-training int8 artifacts so one table compares PTQ and QAT."""
        from edgekit.compress import export_qdq_onnx

        target = ctx.bundle_dir / "model_int8_qat.onnx"
        export_qdq_onnx(ctx.qat_model, ctx.example_inputs, target, input_names=[s.name for s in ctx.inputs],
                        output_names=[s.name for s in ctx.outputs], dynamic_batch=False)
        session = ORTSession(target, ctx.inputs, ctx.outputs, threads=1)
        ctx.artifacts.append(Artifact(target.name, "onnx", "int8", "onnxruntime", session.inputs, session.outputs))
