"""The original model as a decoder with the runner's ``step`` interface (torch, fp32).

The device runner drives ONNX Runtime and TFLite artifacts through ``step``; wrapping the torch
decoder the same way lets one generation loop produce the reference tokens and the artifacts'.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.llm.model import MASKED


class TorchDecoder:
    """``step(ids, past_len, logit_rows) -> logits [K, vocab]`` over an owned KV buffer."""

    def __init__(self, decoder: Any, context: int, prefill_chunk: int) -> None:
        import torch

        c = decoder.config
        self.decoder, self.context, self.prefill_chunk, self.vocab, self.torch = decoder, context, prefill_chunk, c.vocab, torch
        self.keys = torch.zeros(context, c.layers, c.kv_heads, c.head_dim)
        self.values = torch.zeros_like(self.keys)
        self.kv_cache_bytes = 2 * self.keys.numel() * 4

    def reset(self) -> None:
        self.keys.zero_()
        self.values.zero_()

    def step(self, ids: list[int], past_len: int, logit_rows: list[int]) -> np.ndarray:
        torch, t = self.torch, len(ids)
        # plain ops in eager torch: torch.onnx.ops' reference kernels are 8x slower, same math
        self.decoder.fused = False
        bias = torch.zeros(t, past_len + t)
        bias[:, past_len:] = torch.triu(torch.full((t, t), MASKED), 1)
        with torch.no_grad():
            logits, k, v = self.decoder(torch.tensor([ids]), torch.arange(past_len, past_len + t)[None], bias,
                                        self.keys[:past_len], self.values[:past_len], torch.tensor(logit_rows))
        self.keys[past_len:past_len + t] = k
        self.values[past_len:past_len + t] = v
        return logits.numpy()
