"""Export a ``KVDecoder`` to ONNX in the KV contract (``edgekit.llm.model``).

One graph serves prefill and decode in ONNX Runtime (T and P dynamic); static-shape runtimes get
fixed T (the prefill chunk, or 1) and P (the context). Weights go to one external-data file
beside the graph when the model is over protobuf's 2 GB limit, otherwise inline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ConversionError
from edgekit.isolated import captured

__all__ = ["INPUTS", "OUTPUTS", "ExportShapes", "example_inputs", "export_decoder"]

INPUTS = ("input_ids", "position_ids", "attention_bias", "past_key", "past_value", "logit_positions")
OUTPUTS = ("logits", "key", "value")


@dataclass(frozen=True)
class ExportShapes:
    """Example sizes; ``dynamic`` marks T, P and K as symbolic (ONNX Runtime)."""

    tokens: int = 5
    past: int = 3
    logits: int = 2
    dynamic: bool = True


def example_inputs(decoder: Any, shapes: ExportShapes) -> tuple:
    import torch

    c = decoder.config
    t, p = shapes.tokens, shapes.past
    bias = torch.zeros(t, p + t)
    bias[:, p:] = torch.triu(torch.full((t, t), -1e9), 1)
    cache = torch.zeros(p, c.layers, c.kv_heads, c.head_dim)
    return (torch.zeros(1, t, dtype=torch.int64), torch.arange(p, p + t)[None], bias, cache, cache.clone(),
            torch.arange(t - shapes.logits, t))


def _dynamic_shapes(shapes: ExportShapes) -> dict | None:
    if not shapes.dynamic:
        return None
    from torch.export import Dim

    # DYNAMIC lets torch.export work out how the sizes relate (the bias spans past + tokens);
    # the examples avoid 0 and 1, which torch would specialise as constants
    d = Dim.DYNAMIC
    return {"input_ids": {1: d}, "position_ids": {1: d}, "attention_bias": {0: d, 1: d},
            "past_key": {0: d}, "past_value": {0: d}, "logit_positions": {0: d}}


# RMSNormalization, RotaryEmbedding and Attention arrived in opset 23 (ONNX Runtime >= 1.23 runs them)
FUSED_OPSET = 23


def export_decoder(decoder: Any, target: Path, *, opset: int, shapes: ExportShapes = ExportShapes(),
                   fused: bool = True) -> None:
    """Write ``target`` (self-contained when under 2 GB). ``fused``: the opset-23 ops ONNX Runtime
    runs fused (at least opset 23); otherwise plain ops at ``opset`` (for onnx2tf)."""
    import torch

    decoder.fused = fused
    opset = max(opset, FUSED_OPSET) if fused else opset
    # the dynamo exporter is torch's supported path; its chatter is shown only on failure
    try:
        with captured() as log, torch.no_grad():
            torch.onnx.export(decoder, example_inputs(decoder, shapes), str(target), dynamo=True,
                              input_names=list(INPUTS), output_names=list(OUTPUTS), opset_version=opset,
                              dynamic_shapes=_dynamic_shapes(shapes), external_data=False, optimize=True)
    except Exception as exc:
        raise ConversionError(f"exporting the decoder failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} "
                              f"{log.tail(1)}", "report this model's config.json with the error") from exc
