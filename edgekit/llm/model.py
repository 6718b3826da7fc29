"""A decoder-only transformer written for export: llama, qwen2 and gemma from their HF weights.

Why not trace the Hugging Face model: its cache classes, dynamic masks and attention dispatch
export as hundreds of shape ops, and `nn.Linear` becomes `Gemm`, which ORT's int4 quantizer does
not rewrite. This module is the same arithmetic (checked against transformers' logits in the
tests) in the form edge runtimes want:

- every projection is ``x @ W`` with ``W`` stored ``[in, out]`` (a ``MatMul`` on a constant);
- the KV cache is explicit, in one layout for every runtime (the *KV contract* below), so the
  device runner keeps one preallocated numpy buffer and never copies it;
- the LM head reads only the positions asked for, so a 64-token prefill computes one row of
  logits, not 64 x 49,152.

KV contract (``KV_CONTRACT``), inputs:
  ``input_ids`` int64 [1, T]; ``position_ids`` int64 [1, T]; ``attention_bias`` float32
  [T, P + T] (0 where a query may attend, -1e9 where not; the runner builds it);
  ``past_key`` / ``past_value`` float32 [P, layers, kv_heads, head_dim] (post-RoPE keys);
  ``logit_positions`` int64 [K] (which of the T positions get logits).
Outputs: ``logits`` float32 [K, vocab]; ``key`` / ``value`` float32 [T, layers, kv_heads,
head_dim], the new entries the runner writes into its buffer at rows P .. P + T.
That is the stacked form the export writes; a static-shape runtime (TFLite) gets P = context and
masks the unused rows. ONNX Runtime artifacts are rewritten to the per-layer form of the same
contract (``edgekit.llm.gqa``): GroupQueryAttention over one cache per layer, bound as input and
output, appended in place.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["KV_CONTRACT", "DecoderConfig", "load_decoder", "build_decoder"]

KV_CONTRACT = "edgekit-kv-2"
MASKED = -1e9


@dataclass(frozen=True)
class DecoderConfig:
    """The architecture facts the export needs, read from a HF ``config.json``."""

    family: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    rope_theta: float
    tied: bool
    qkv_bias: bool
    act: str  # "silu" or "gelu_tanh"
    embed_scale: float  # gemma multiplies embeddings by sqrt(hidden)
    norm_offset: float  # gemma's RMSNorm scales by (1 + w)
    max_positions: int
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> DecoderConfig:
        family = config["model_type"]
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        gemma = family == "gemma"
        rope = config.get("rope_parameters") or {}
        rope_type = rope.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type", "default")
        if rope_type != "default":
            from edgekit.llm.source import LlmSourceError
            raise LlmSourceError(f"rope_type {rope_type!r} is not supported yet (only plain RoPE)")
        eos = config.get("eos_token_id")
        return cls(
            family=family, vocab=config["vocab_size"], hidden=hidden, layers=config["num_hidden_layers"],
            heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads, intermediate=config["intermediate_size"],
            eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta") or config.get("rope_theta", 10000.0)),
            tied=bool(config.get("tie_word_embeddings", gemma)),
            qkv_bias=family == "qwen2" or bool(config.get("attention_bias", False)),
            act="gelu_tanh" if gemma else "silu", embed_scale=math.sqrt(hidden) if gemma else 1.0,
            norm_offset=1.0 if gemma else 0.0, max_positions=config.get("max_position_embeddings", 2048),
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=tuple(eos if isinstance(eos, list) else [eos] if eos is not None else []))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_decoder(config: DecoderConfig, weights: dict[str, Any], context: int):
    """The exportable module for ``config`` with HF-named ``weights`` (torch tensors)."""
    from edgekit.llm._torch import KVDecoder

    return KVDecoder(config, weights, context)


def load_decoder(folder: Path, context: int):
    """Read a HF folder with safetensors only (never a pickle) and build the decoder."""
    from safetensors.torch import load_file

    config = DecoderConfig.from_hf(json.loads((folder / "config.json").read_text()))
    weights: dict[str, Any] = {}
    for path in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(path)))
    return config, build_decoder(config, weights, context)
