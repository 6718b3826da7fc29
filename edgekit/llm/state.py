"""What an LLM build carries between its stages (``BuildContext.llm``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.llm.model import DecoderConfig
from edgekit.llm.source import LlmSource


@dataclass
class Prompts:
    """Token-id prompts and the original model's greedy continuations and first-step logits."""

    ids: list[list[int]]
    reference_tokens: np.ndarray  # int64 [N, new_tokens]
    first_logits: np.ndarray  # float32 [N, vocab]

    def to_npz(self) -> dict[str, np.ndarray]:
        width = max(len(p) for p in self.ids)
        padded = np.zeros((len(self.ids), width), np.int64)
        for i, ids in enumerate(self.ids):
            padded[i, :len(ids)] = ids
        return {"prompt_ids": padded, "prompt_lengths": np.array([len(p) for p in self.ids], np.int64),
                "reference_tokens": self.reference_tokens, "first_logits": self.first_logits}


@dataclass
class LlmState:
    source: LlmSource
    config: DecoderConfig
    decoder: Any  # edgekit.llm._torch.KVDecoder, the original every artifact is judged against
    tokenizer: Any  # tokenizers.Tokenizer
    tokenizer_file: Path
    golden: Prompts | None = None  # verification prompts (shipped in golden_llm.npz)
    heldout: Prompts | None = None  # quality prompts, never in calibration
    heldout_text: list[int] = field(default_factory=list)  # tokens of the held-out text (perplexity)
    onnx_fp32: Path | None = None
