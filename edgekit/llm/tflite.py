"""TFLite (LiteRT) artifacts of a decoder in the KV contract: one ``.tflite`` with a ``prefill``
signature (T = ``prefill_chunk``) and a ``decode`` signature (T = 1), static shapes, sharing weights.

Static shapes (``docs/llm-bundle.md``): P = ``context`` (the runner passes its whole cache buffer
and masks the unused rows with -1e9 in ``attention_bias``), K = T (logits for every row of the
chunk; the runner picks the rows it wants).

Why onnx2tf and not litert-torch (whose generative API makes the same two signatures):
- onnx2tf is already the project's TFLite converter (``edgekit.quantize.tflite_variants.convert_onnx``)
  and is in the locked venv; litert-torch 0.10.0 cannot join it (its dependency xdsl 0.28 pins
  typing-extensions < 4.13 against the lock's 4.16), so it would need a second venv with its own
  torch on every build host, and its converter wheel is x86_64 only;
- it starts from the same static ONNX export as every other artifact (``edgekit.llm.export``), so
  the TFLite graph is the arithmetic the ONNX artifacts are verified on.
How the weights are shared: onnx2tf converts one static graph per signature to a SavedModel; a
third SavedModel wraps both as the signatures ``prefill`` and ``decode`` (outputs renamed to the
contract's names), and TF's TFLiteConverter writes it as one flatbuffer. The converter stores each
distinct constant buffer once, so the two subgraphs read the same weight buffers (measured on the
tiny llama: one signature 350 KB, both 377 KB). Dynamic-range int8 (int8 weights, activations
quantized at run time) comes from the same joint SavedModel (``tflite_dynamic_range``): the scheme
that suits FC-heavy graphs on CPU (GUIDE section 2).

Measured on SmolLM2-135M (context 512, chunk 64; this x86 host, loaded by other jobs; LiteRT 2.3
XNNPACK, 2 threads): fp32 539 MB (the weights once), tokens equal to the torch decoder for 16 steps
(" Paris."), decode 110 ms/token, a 64-token prefill chunk 457 ms; int8_dynamic 254 MB (the tied
embedding's GATHER table stays fp32 beside the int8 LM head), first logits cosine 0.986, " Paris."
too, decode 48 ms, prefill chunk 140 ms. Converting took 17.5 min wall and up to 14 GB in the onnx2tf
process (it also writes float32/float16 files of its own we do not use); int8 from the joint
SavedModel 2 min.

The conversions run in their own processes (``edgekit.isolated.run_tool``): TF and onnx2tf stay
out of the caller's memory.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ConversionError

__all__ = ["PRECISIONS", "SIGNATURES", "LlmTFLiteOptions", "convert_decoder_tflite", "joint_saved_model",
           "joint_saved_model_cli", "signature_tokens", "tflite_fp32", "write_tflite"]

SIGNATURES = ("prefill", "decode")
PRECISIONS = ("fp32", "int8_dynamic")
_HINT = "check the decoder's ops are supported by onnx2tf, or leave TFLite out of the LLM build"


@dataclass(frozen=True)
class LlmTFLiteOptions:
    """What the TFLite artifact is built for.

    Attributes:
        precision: ``fp32``, or ``int8_dynamic`` (int8 weights, float activations quantized per op
            at run time; no calibration data).
        prefill_chunk: T of the ``prefill`` signature (the prompt is fed in chunks of this size).
        context: P, the cache rows the graph takes (the runner's buffer length).
        opset: the ONNX opset of the intermediate static export.
    """

    precision: str = "fp32"
    prefill_chunk: int = 64
    context: int = 512
    opset: int = 18

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if not 1 < self.prefill_chunk <= self.context:
            raise ValueError(f"prefill_chunk {self.prefill_chunk} must be in 2 .. context ({self.context})")


def signature_tokens(options: LlmTFLiteOptions) -> dict[str, int]:
    """T per signature."""
    return {"prefill": options.prefill_chunk, "decode": 1}


def convert_decoder_tflite(folder: Path, output: Path, work: Path, *,
                           options: LlmTFLiteOptions = LlmTFLiteOptions()) -> Path:
    """The HF ``folder``'s decoder as ``output`` (.tflite, signatures ``prefill`` and ``decode``).

    ``work`` holds the intermediate ONNX graphs and SavedModels; a later call with the same
    ``work``, context and chunk but another precision reuses the joint SavedModel."""
    joint = _joint_dir(work, options)
    if not (joint / "saved_model.pb").is_file():
        _export_saved_model(folder, work, options)
    return write_tflite(joint, output, options.precision)


def _joint_dir(work: Path, options: LlmTFLiteOptions) -> Path:
    return Path(work) / f"joint_c{options.context}_t{options.prefill_chunk}"


def _export_saved_model(folder: Path, work: Path, options: LlmTFLiteOptions) -> Path:
    """Static ONNX per signature -> onnx2tf SavedModel per signature -> the joint SavedModel."""
    import torch

    from edgekit.isolated import run_tool
    from edgekit.llm.export import INPUTS, ExportShapes, example_inputs, export_decoder
    from edgekit.llm.model import load_decoder
    from edgekit.quantize.tflite_variants import convert_onnx

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    _, decoder = load_decoder(Path(folder), options.context)
    parts = []
    for name, tokens in signature_tokens(options).items():
        shapes = ExportShapes(tokens=tokens, past=options.context, logits=tokens, dynamic=False)
        onnx_path = work / f"{name}.onnx"  # onnx2tf names its files by this stem
        export_decoder(decoder, onnx_path, opset=options.opset, shapes=shapes, fused=False)
        with torch.no_grad():
            samples = {k: v.numpy()[None] for k, v in zip(INPUTS, example_inputs(decoder, shapes))}
        # -kat: the caches are 4-D; without it onnx2tf would take them for NCHW images and transpose.
        # The samples go as float32 (convert_onnx's rule), so onnx2tf's ONNX Runtime dry run fails on
        # the int64 ids and it skips its per-MatMul validation, which re-runs the partial TF model
        # at every MatMul (quadratic in depth: > 10 min of SmolLM2's prefill graph was spent there)
        parts.append(convert_onnx(onnx_path, work / name, samples, extra_args=("-kat", *INPUTS)))
    del decoder
    joint = _joint_dir(work, options)
    run_tool(joint_saved_model_cli, [*map(str, parts), str(joint)], work, "joining the TFLite signatures", _HINT)
    return joint


def joint_saved_model(prefill_dir: str | Path, decode_dir: str | Path, target: str | Path) -> Path:
    """One SavedModel whose signatures ``prefill`` and ``decode`` call onnx2tf's two SavedModels,
    with the contract's output names (onnx2tf's are ``output_0`` .. in the ONNX graph's order)."""
    import tensorflow as tf

    from edgekit.llm.export import OUTPUTS

    root = tf.Module()
    root.parts = [tf.saved_model.load(str(prefill_dir)), tf.saved_model.load(str(decode_dir))]

    def named(fn):
        spec = fn.structured_input_signature[1]
        names = sorted(spec)

        @tf.function(input_signature=[spec[k] for k in names])
        def call(*args):
            result = fn(**dict(zip(names, args)))
            return {out: result[f"output_{i}"] for i, out in enumerate(OUTPUTS)}

        return call.get_concrete_function()

    signatures = {name: named(part.signatures["serving_default"]) for name, part in zip(SIGNATURES, root.parts)}
    tf.saved_model.save(root, str(target), signatures=signatures)
    return Path(target)


def joint_saved_model_cli() -> None:
    """:func:`joint_saved_model` on ``sys.argv``: PREFILL_DIR DECODE_DIR TARGET (run isolated)."""
    joint_saved_model(*sys.argv[1:4])


def tflite_fp32(saved_model_dir: str | Path, output: str | Path) -> Path:
    """Every signature of the SavedModel, fp32, in one flatbuffer (constants stored once)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    return path


def _fp32_cli() -> None:
    tflite_fp32(*sys.argv[1:3])


def write_tflite(joint: Path, output: Path, precision: str) -> Path:
    """The joint SavedModel as a ``precision`` .tflite (in its own process)."""
    from edgekit.isolated import run_tool
    from edgekit.quantize.tflite_variants import dynamic_range_cli

    cli = {"fp32": _fp32_cli, "int8_dynamic": dynamic_range_cli}[precision]
    output = Path(output).resolve()
    run_tool(cli, [str(Path(joint).resolve()), str(output)], Path(joint).parent, f"TFLite {precision} conversion", _HINT)
    if not output.is_file():
        raise ConversionError(f"the TFLite {precision} conversion wrote no {output.name}", "run with --debug")
    return output
