"""Tiny text models defined in code for the fast tests (random weights, fixed seeds), and the two
helpers the quantizer and example tests compare them with (onnxruntime outputs, cosines)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 100
SEQ = 16
D_MODEL = 32


class TinyLayer(nn.Module):
    """A BERT-style post-LN encoder layer with attention written out (as HF BERT exports)."""

    def __init__(self, heads: int = 4, ffn: int = 64) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(D_MODEL, D_MODEL) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(D_MODEL), nn.LayerNorm(D_MODEL)
        self.up, self.down = nn.Linear(D_MODEL, ffn), nn.Linear(ffn, D_MODEL)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z(x).reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (self.q, self.k, self.v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads) + key_bias
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = self.ln1(x + self.o(context))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class TinyEncoder(nn.Module):
    """Embedding + 2 BERT-style layers (GELU) + masked mean pooling + a Linear head.

    The head is a 2-D Linear, which the dynamo exporter writes as ``Gemm`` (the int4 path has to
    rewrite it); the encoder's 3-D Linears become MatMul + Add. (torch's nn.TransformerEncoder
    with a float ``mask`` was tried first: onnx2tf converted it with max abs error 0.8, while each
    part alone converted exactly; the written-out attention converts exactly, as MiniLM does.)
    """

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Parameter(torch.randn(1, SEQ, D_MODEL) * 0.1)
        self.ln = nn.LayerNorm(D_MODEL)
        self.layers = nn.ModuleList(TinyLayer() for _ in range(2))
        self.head = nn.Linear(D_MODEL, D_MODEL)
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        key_bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # [B, 1, 1, T] as in BERT
        h = self.ln(self.embed(input_ids) + self.pos)
        for layer in self.layers:
            h = layer(h, key_bias)
        pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        out = self.head(pooled)
        # dim=1 as sentence-transformers writes it: onnx2tf fails on ReduceL2 over a positive axis
        return F.normalize(out, p=2, dim=1) if self.normalize else out


def token_samples(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` random token inputs ``[count, 1, SEQ]`` int64 with 6..SEQ real tokens each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(count, 1, SEQ), dtype=np.int64)
    lengths = rng.integers(6, SEQ + 1, size=count)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)[:, None, :]
    return {"input_ids": ids * mask, "attention_mask": mask}


def export(model: nn.Module, path, output_name: str = "embedding") -> None:
    """dynamo export at [1, SEQ] with edgekit's input names."""
    samples = token_samples(1)
    example = (torch.from_numpy(samples["input_ids"][0]), torch.from_numpy(samples["attention_mask"][0]))
    torch.onnx.export(model.eval(), example, str(path), dynamo=True, external_data=False,
                      input_names=["input_ids", "attention_mask"], output_names=[output_name])


class NormalizeHead(nn.Module):
    """Linear + F.normalize(dim=1) on a float [1, 32] input: the smallest graph on which onnx2tf
    1.28.8 fails at ReduceL2 (the tiny encoder's identical ReduceL2 happens to convert)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(D_MODEL, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), p=2, dim=1)


def hash_tokenize(sentences: list[str]) -> dict[str, np.ndarray]:
    """A stand-in word-hash tokenizer for the tiny encoders (real models use their own, see
    edgekit/examples/minilm.py): ``{"input_ids", "attention_mask"}`` int64 ``[N, 1, SEQ]``."""
    import zlib

    ids = np.zeros((len(sentences), 1, SEQ), np.int64)
    for row, text in enumerate(sentences):
        words = [1 + zlib.crc32(w.lower().encode()) % (VOCAB - 1) for w in text.split()][:SEQ]
        ids[row, 0, :len(words)] = words
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}



_MODEL_FILE = """\
import sys
import torch
from torch import nn
sys.path.insert(0, {here!r})
from tiny_models import TinyEncoder, TinyLayer, hash_tokenize

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["embedding"]
CALIBRATION = "text"
TASK = "embedding"

tokenize_text = hash_tokenize

def factory():
    model = TinyEncoder()
{swap}    sample = tokenize_text(["a short sentence to trace the graph with"])
    return model.eval(), (torch.from_numpy(sample["input_ids"][0]), torch.from_numpy(sample["attention_mask"][0]))
"""


def model_file_source(layers: int | None = None) -> str:
    """A user model file (``path.py:factory``) serving a :class:`TinyEncoder` on the text set,
    tokenized by :func:`hash_tokenize`; ``layers`` replaces its blocks with that many seeded ones
    (a depth student then has blocks to drop)."""
    swap = "" if layers is None else \
        f"    torch.manual_seed(1)\n    model.layers = nn.ModuleList(TinyLayer() for _ in range({layers}))\n"
    return _MODEL_FILE.format(here=str(Path(__file__).resolve().parent), swap=swap)


def ort_outputs(path: Path | str, samples: dict[str, np.ndarray], reference: bool = False) -> np.ndarray:
    """Run every sample through onnxruntime (1 thread): ``[N, *output_shape]``. ``reference``:
    by ONNX Runtime's reference semantics (the runner's ``reference_model``, QDQ as float), the
    arithmetic of an ARM or VNNI CPU: a quality figure of an int8 file must not depend on whether
    this host's AVX2 u8s8 kernels saturate (GUIDE.md section 2)."""
    import onnxruntime as ort

    from edgekit.runner.edgekit_runner import OrtBackend, reference_model

    # the runner's session (1 thread; reference: its rewritten model at ORT_ENABLE_BASIC), as
    # the build's reference verdicts open it
    model = reference_model(Path(path)) if reference else Path(path)
    session = OrtBackend(ort, model, 1, "CPUExecutionProvider", reference=reference).sess
    count = len(next(iter(samples.values())))
    return np.stack([session.run(None, {k: v[i] for k, v in samples.items()})[0] for i in range(count)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two ``[N, ...]`` arrays."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def tiny_llama_folder(folder: Path, *, seed: int = 0, family: str = "llama", proj_scale: float = 0.08) -> Path:
    """A 2-layer llama-architecture HF folder (config.json + model.safetensors), random weights.

    Written with safetensors exactly as ``save_pretrained`` lays it out, so the LLM path reads it
    as it reads a real checkpoint. Sizes keep grouped-query attention (4 heads, 2 KV heads) and a
    tied embedding, like SmolLM2. At the default ``proj_scale`` the residual stream is mostly the
    tied input embedding, so greedy decoding repeats the last token whatever came before; 0.3 gives
    varied continuations that depend on the whole context (what a KV-cache test needs)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    vocab, hidden, layers, heads, kv_heads, inter = 96, 64, 2, 4, 2, 128
    head_dim = hidden // heads
    config = {"model_type": family, "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
              "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
              "tie_word_embeddings": True, "max_position_embeddings": 256, "bos_token_id": 1,
              "eos_token_id": 2, "hidden_act": "silu", "attention_bias": family == "qwen2"}
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = proj_scale) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def norm() -> torch.Tensor:
        return 1 + rand(hidden, scale=0.08)

    weights = {"model.embed_tokens.weight": rand(vocab, hidden, scale=0.5), "model.norm.weight": norm()}
    for i in range(layers):
        p = f"model.layers.{i}."
        weights |= {p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
                    p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
                    p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
                    p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
                    p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
                    p + "mlp.gate_proj.weight": rand(inter, hidden), p + "mlp.up_proj.weight": rand(inter, hidden),
                    p + "mlp.down_proj.weight": rand(hidden, inter)}
        if family == "qwen2":
            weights |= {p + f"self_attn.{n}_proj.bias": rand(d) for n, d in
                        (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim))}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(__import__("json").dumps(config, indent=2))
    tiny_tokenizer(vocab).save(str(folder / "tokenizer.json"))
    return folder


def tiny_tokenizer(vocab: int):
    """A word-level tokenizer over the bundled text set's most frequent words (ids 3.. vocab-1;
    0 unk, 1 bos, 2 eos), so real sentences become mostly real tokens for a tiny model."""
    import collections
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from edgekit.text import load_sentences

    counts = collections.Counter(w for s in load_sentences("calibration") for w in re.findall(r"\w+|[^\w\s]", s.lower()))
    words = ["<unk>", "<s>", "</s>"] + [w for w, _ in counts.most_common(vocab - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok
