"""Weight-only int8 and int4 decoder artifacts for ONNX Runtime (``edgekit.llm.quantize``).

int8 uses the profile's ``[llm] int8_scheme``: ``grid`` keeps a source that is already on a
4-bit block grid (SmolLM2's GGUF is Q4_1, its tied table Q8_0) exact, so the int8 artifact's
greedy continuations are the original's; other matrices get the calibration-aware search.
int4 uses the profile's scheme (``[llm] int4_scheme``; ``search`` is calibration-aware: per block
the least error weighted by the calibration text's activations) with the outlying matrices kept at
int8 within the byte budget; the round-to-nearest baseline is built beside it (not shipped) so the
table shows what the scheme buys. The calibration split feeds the statistics, never the held-out.
"""
from __future__ import annotations

from dataclasses import asdict

from edgekit.context import Artifact, BuildContext
from edgekit.llm.gqa import to_shared_cache
from edgekit.llm.quantize import QuantOptions, QuantReport, activation_diags, head_gram, quantize_onnx, text_windows
from edgekit.llm.stages.export import _tolerance
from edgekit.stages.base import Stage
from edgekit.text import load_sentences

CALIBRATION_TOKENS = 4096
CALIBRATION_WINDOW = 256


def options_for(ctx: BuildContext, precision: str, scheme: str | None = None) -> QuantOptions:
    cfg = ctx.profile.llm
    if precision == "int8":
        return QuantOptions(bits=8, scheme=scheme or cfg.int8_scheme, block_size=cfg.int4_block_size)
    head = {"head_bits": 4, "head_scheme": "gptq"} if cfg.int4_head == "gptq" else {}
    return QuantOptions(bits=4, scheme=scheme or cfg.int4_scheme, block_size=cfg.int4_block_size,
                        max_ratio=cfg.int4_max_ratio, **head)


def record(report: QuantReport) -> dict:
    promoted = [c.name for c in report.layers if c.bits == 8 and c.role == "projection" and report.options.bits == 4]
    return {"scheme": f"{report.options.bits}-bit {report.options.scheme}, block {report.options.block_size}",
            "accuracy_level": report.options.accuracy_level, "head_bits": report.options.head_bits,
            "head_scheme": report.options.head_scheme,
            "ratio_to_fp32": round(report.ratio, 4), "kept_int8": promoted,
            "weighted_error": round(sum(c.error for c in report.layers), 6),
            "rtn_weighted_error": round(sum(c.rtn_error for c in report.layers), 6)}


class QuantizeDecoder(Stage):
    name = "quantize"
    description = "weight-only int8 / int4 (MatMulNBits) decoder artifacts"

    def applies(self, ctx: BuildContext) -> bool:
        return bool({"int8", "int4"} & {p.value for p in ctx.profile.llm.ort_precisions})

    def run(self, ctx: BuildContext) -> None:
        llm = ctx.llm
        window = min(CALIBRATION_WINDOW, ctx.profile.llm.context)  # positions past the context have no RoPE row
        windows = text_windows(llm.tokenizer_file, load_sentences("calibration"), window, CALIBRATION_TOKENS)
        ctx.reporter.info(f"calibration statistics on {sum(map(len, windows))} tokens of the calibration split")
        diags = activation_diags(llm.onnx_fp32, windows)
        precisions = [p.value for p in ctx.profile.llm.ort_precisions if p.value in ("int8", "int4")]
        gptq = any(options_for(ctx, p).head_scheme == "gptq" for p in precisions)
        gram = head_gram(llm.onnx_fp32, windows) if gptq else None
        for precision in precisions:
            target = ctx.bundle_dir / f"model_{precision}.onnx"
            report = quantize_onnx(llm.onnx_fp32, target, options_for(ctx, precision), diags, gram)
            to_shared_cache(target)
            artifact = Artifact(target.name, "onnx", precision, "onnxruntime", tolerance=_tolerance(ctx, precision),
                                quantization=record(report))
            if precision == "int4":
                baseline = ctx.scratch_dir / "baseline_int4_rtn.onnx"
                rtn = quantize_onnx(llm.onnx_fp32, baseline, options_for(ctx, precision, "rtn"), diags, gram)
                to_shared_cache(baseline)
                artifact.quantization["baselines"] = {"rtn": {"file": str(baseline), "bytes": rtn.bytes,
                                                              "scheme": record(rtn)["scheme"]}}
            ctx.artifacts.append(artifact)
            ctx.reporter.info(f"{target.name}: {asdict(report.options)['scheme']}, {report.ratio:.3f}x fp32")
