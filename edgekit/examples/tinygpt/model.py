"""TinyGPT: 4 pre-LayerNorm transformer decoder blocks over bytes, tied input/output embedding.

Byte-level (vocabulary 256) so no tokenizer is needed, and a fixed context of 64 so every
converter sees static shapes. Export-friendly by construction: attention is written out with
MatMul/Softmax and an additive causal mask buffer (-1e4, not -inf: finite in fp16 and never
NaN after a quantized Softmax input), GELU is ``nn.GELU()`` (ONNX ``Gelu`` at opset 20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_FILE = Path(__file__).resolve().with_name("tinygpt.pt")
INPUT_NAMES = ["input_ids"]
OUTPUT_NAMES = ["logits"]
TASK = "lm"
CALIBRATION = "text"  # the bundled sentences, cut into 64-byte windows by tokenize_text
CONTEXT = 64
VOCAB = 256


@dataclass(frozen=True)
class TinyGPTConfig:
    """Model size. The defaults give 3.2 M parameters (12.8 MB fp32)."""

    vocab: int = VOCAB
    context: int = CONTEXT
    d_model: int = 256
    heads: int = 4
    layers: int = 4
    ffn: int = 1024


class Block(nn.Module):
    """Pre-LN decoder block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: TinyGPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.up = nn.Linear(cfg.d_model, cfg.ffn)
        self.act = nn.GELU()
        self.down = nn.Linear(cfg.ffn, cfg.d_model)
        mask = torch.triu(torch.full((cfg.context, cfg.context), -1e4), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(d // self.heads)) + self.mask[:t, :t]
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.down(self.act(self.up(self.ln2(x))))


class TinyGPT(nn.Module):
    """Byte-level causal LM: ``[B, T]`` int64 bytes -> ``[B, T, 256]`` next-byte logits."""

    def __init__(self, cfg: TinyGPTConfig = TinyGPTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.context, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-byte logits for every position (position ``t`` sees bytes ``0..t``)."""
        x = self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        # Tied output projection: the embedding matrix maps hidden states back to bytes.
        return self.ln_f(x) @ self.tok.weight.t()


def load_model(weights: Path | str | None = None) -> TinyGPT:
    """The trained model in eval mode, with the shipped (or the given) weights."""
    model = TinyGPT()
    model.load_state_dict(torch.load(weights or WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval()


def tokenize_text(sentences: list[str]) -> dict[str, np.ndarray]:
    """Model inputs from text: the sentences joined by spaces, as UTF-8 bytes, cut into
    consecutive ``CONTEXT``-byte windows: ``{"input_ids": int64 [N, 1, 64]}`` (edgekit's
    calibration convention). The hook a build uses to turn a text set into samples."""
    data = np.frombuffer(" ".join(sentences).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    count = len(data) // CONTEXT
    if count == 0:
        raise ValueError(f"need at least {CONTEXT} bytes of text, got {len(data)}")
    return {"input_ids": data[: count * CONTEXT].reshape(count, 1, CONTEXT)}


def example_inputs() -> tuple[torch.Tensor]:
    """One window of real text as int64 ``[1, 64]`` bytes."""
    text = b"def factory():\n    \"\"\"Return the model and example inputs for export.\"\"\"\n"
    return (torch.tensor(list(text[:CONTEXT]), dtype=torch.int64).reshape(1, CONTEXT),)


def factory() -> tuple[TinyGPT, tuple[torch.Tensor]]:
    """``(model, example_inputs)`` for edgekit: trained TinyGPT, context 64, logits ``[1, 64, 256]``."""
    return load_model(), example_inputs()
