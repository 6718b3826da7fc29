"""Weight-only quantization of a KV-contract ONNX decoder for ONNX Runtime (issue #12, items 3-4).

``quantize_onnx(src, dst, QuantOptions(...), diags)`` rewrites every projection ``MatMul`` as ORT's
``MatMulNBits`` (block-wise 4 or 8 bits, along the input dimension) and the tied embedding/LM
head as one ``MatMulNBits`` weight shared with a ``GatherBlockQuantized`` lookup: 8-bit, or 4-bit
by GPTQ with a residual table for the lookup (``quantize_head``).

Schemes (``QuantOptions.scheme``):
  ``rtn``: asymmetric min-max round-to-nearest, the math of ORT's ``DefaultWeightOnlyQuantConfig``
  (the baseline); ``rtn_sym``: symmetric RTN; ``search``: per block, the least activation-weighted
  error (weights ``diag(X^T X)`` of the calibration activations, ``activation_diags``) among
  shrunk min-max and symmetric candidates, RTN included, so never worse than RTN by that measure;
  ``grid``: a matrix already on a ``d * q + m`` block grid (GGUF Q4_1) is stored exactly (codes and
  scales in ``MatMulNBits``, the offsets ``m`` as ``blocksum(x) @ M``), others fall back to search.
With ``bits=4`` the matrices whose weighted error stands out (``promote_factor`` x the median) go
to 8 bits while the artifact stays under ``max_ratio`` of the fp32 file.

Why ``MatMulNBits`` for both int8 and int4: it is the one weight-only kernel family ORT's CPU
provider keeps in packed form; measured on ORT 1.32 (x86, AVX-512 VNNI), 8-bit is fast only at
``accuracy_level`` 4 (int8 activations: ~50x the level-0 path), 4-bit at levels 3 and 4.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.llm import _blockquant as bqm
from edgekit.llm._gptq import gptq
from edgekit.llm._graph import Rewrite, replace_fused, replace_matmul, replace_tied_head, tied_head, weight_sites

__all__ = ["QuantOptions", "LayerChoice", "QuantReport", "activation_diags", "head_gram", "quantize_head",
           "quantize_onnx", "text_windows"]

SCHEMES = ("search", "rtn", "rtn_sym", "grid")
HEAD_SCHEMES = ("rtn_sym", "gptq")


class QuantizeError(EdgekitError):
    exit_code = 2


@dataclass(frozen=True)
class QuantOptions:
    """How to quantize; the defaults are the int4 artifact."""

    bits: int = 4  # the projections: 4 or 8
    block_size: int = 32
    scheme: str = "search"
    accuracy_level: int = 4  # MatMulNBits' level for the projections (4 = int8 activations)
    head_bits: int = 8  # the tied embedding / LM head; 0 keeps it fp32
    # ``rtn_sym`` (a GGUF Q8_0 table comes back exactly at 8 bits) or ``gptq`` (4 bits, against
    # ``head_gram``; the lookup adds a 4-bit residual table: see quantize_head)
    head_scheme: str = "rtn_sym"
    head_accuracy_level: int = 4  # 8-bit MatMulNBits is fast only at level 4 on ORT 1.32 CPU
    max_ratio: float = 0.20  # int8 promotions stop at this fraction of the fp32 file's bytes
    promote_factor: float = 2.0  # promote a 4-bit matrix whose weighted error > this x the median
    fuse: bool = True  # one MatMulNBits per group of same-input, same-bits matrices (q/k/v, gate/up)

    def check(self, has_diags: bool) -> None:
        if self.bits not in (4, 8) or self.head_bits not in (0, 4, 8):
            raise QuantizeError(f"bits {self.bits}/{self.head_bits} are not supported", "use 4 or 8")
        if self.scheme not in SCHEMES:
            raise QuantizeError(f"unknown scheme {self.scheme!r}", f"use one of {', '.join(SCHEMES)}")
        if self.head_scheme not in HEAD_SCHEMES or (self.head_scheme == "gptq" and self.head_bits != 4):
            raise QuantizeError(f"head scheme {self.head_scheme!r} with {self.head_bits} bits is not supported",
                                "use rtn_sym (any bits) or gptq (4 bits)")
        if self.scheme == "search" and not has_diags:
            raise QuantizeError("scheme 'search' needs calibration activations",
                                "pass diags=activation_diags(model, windows), or use scheme 'rtn'")


@dataclass(frozen=True)
class LayerChoice:
    """One matrix: its bits, scheme, weighted error and the RTN error beside it."""

    name: str
    shape: tuple[int, int]
    bits: int
    scheme: str
    error: float
    rtn_error: float
    picks: tuple[tuple[str, int], ...] = ()
    role: str = "projection"  # or "tied_head": the embedding and LM head table


@dataclass(frozen=True)
class QuantReport:
    path: str
    options: QuantOptions
    bytes: int
    fp32_bytes: int
    layers: tuple[LayerChoice, ...] = field(default=())

    @property
    def ratio(self) -> float:
        return self.bytes / self.fp32_bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def text_windows(tokenizer_json: Path, texts: Sequence[str], window: int, max_tokens: int) -> list[list[int]]:
    """The texts joined by newlines, tokenized once, cut into windows of ``window`` tokens."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode("\n".join(texts)).ids[:max_tokens]
    return [ids[i:i + window] for i in range(0, len(ids), window)]


def contract_feed(ids: Sequence[int], rows: Any, layers: int, kv_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    """KV-contract inputs for a prefill of ``ids`` from position 0 with logits at ``rows``."""
    t = len(ids)
    empty = np.zeros((0, layers, kv_heads, head_dim), np.float32)
    return {"input_ids": np.array([ids], np.int64), "position_ids": np.arange(t, dtype=np.int64)[None],
            "attention_bias": np.triu(np.full((t, t), -1e9, np.float32), 1), "past_key": empty,
            "past_value": empty, "logit_positions": np.asarray(rows, np.int64)}


def _cache_dims(model: Any) -> tuple[int, int, int]:
    past = next(i for i in model.graph.input if i.name == "past_key")
    dims = past.type.tensor_type.shape.dim
    return dims[1].dim_value, dims[2].dim_value, dims[3].dim_value


def _stable(d: np.ndarray) -> np.ndarray:
    """Round to 10 mantissa bits, and lift empty channels to a small floor: a choice made on the
    statistics must not flip on the last bits of a threaded sum (byte-identical artifacts), and a
    channel the calibration text never excited must still count."""
    return _rounded(d.astype(np.float64) + 1e-6 * max(float(d.mean()), 1e-30)).astype(np.float32)


def _rounded(x: np.ndarray) -> np.ndarray:
    m, e = np.frexp(x)
    return np.ldexp(np.rint(m * 1024) / 1024, e)


def activation_diags(model_path: Path, windows: Sequence[Sequence[int]], threads: int = 2) -> dict[str, np.ndarray]:
    """sum over calibration tokens of x_k^2 for the input x of every weight MatMul, by tensor name."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    head = tied_head(model)
    names = sorted({s.activation for s in weight_sites(model)} | ({head.activation} if head else set()))
    dims = _cache_dims(model)
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model
    sums: dict[str, np.ndarray] = {}
    for ids in windows:
        outs = session.run(names, contract_feed(ids, [len(ids) - 1], *dims))
        for name, x in zip(names, outs):
            x2 = (x.reshape(-1, x.shape[-1]).astype(np.float64) ** 2).sum(0)
            sums[name] = sums.get(name, 0) + x2
    return {n: _stable(v) for n, v in sums.items()}


def head_gram(model_path: Path, windows: Sequence[Sequence[int]], threads: int = 2) -> np.ndarray | None:
    """``X^T X`` [hidden, hidden] of the tied head's input over every calibration position (GPTQ's
    statistics; ``activation_diags`` sees the head at the logit rows only), or None without one."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    head, dims = tied_head(model), _cache_dims(model)
    if head is None:
        return None
    model.graph.output.extend([onnx.ValueInfoProto(name=head.activation)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model
    gram = 0.0
    for ids in windows:
        x = session.run([head.activation], contract_feed(ids, np.arange(len(ids)), *dims))[0]
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        gram = gram + x.T @ x
    return _rounded(np.asarray(gram))


def _quantize(w_nk: np.ndarray, bits: int, opts: QuantOptions, diag: np.ndarray | None):
    if opts.scheme == "grid" and (grid := bqm.quantize_grid(w_nk, bits, opts.block_size)) is not None:
        return grid
    if opts.scheme in ("search", "grid") and diag is not None:
        return bqm.quantize_search(w_nk, bits, opts.block_size, diag)
    return bqm.quantize_rtn(w_nk, bits, opts.block_size, symmetric=opts.scheme == "rtn_sym")


def _choice(name: str, w_nk: np.ndarray, bq: bqm.BlockQuant, scheme: str, diag: np.ndarray | None) -> LayerChoice:
    d = diag if diag is not None else np.ones(w_nk.shape[1], np.float32)
    rtn = bqm.quantize_rtn(w_nk, bq.bits, bq.block, symmetric=False)
    return LayerChoice(name, tuple(w_nk.shape), bq.bits, scheme, bqm.weighted_error(w_nk, bqm.dequantize(bq), d),
                       bqm.weighted_error(w_nk, bqm.dequantize(rtn), d), bq.picks)


def _packed_bytes(shape: tuple[int, int], bits: int, block: int, zeros: bool) -> int:
    n, k = shape
    kb = k // block
    return n * k * bits // 8 + n * kb * 4 + (n * -(-kb * bits // 8) if zeros else 0)


def _plan(model: Any, opts: QuantOptions, diags: dict[str, np.ndarray] | None, budget: int):
    """Quantize every projection at ``opts.bits``, then promote the outliers to 8 bits in budget."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    plan = []
    head = tied_head(model)
    for site in (s for s in weight_sites(model) if head is None or s.node != head.matmul):
        w = numpy_helper.to_array(inits[site.weight]).T  # [N, K]
        diag = diags.get(site.activation) if diags else None
        bq = _quantize(w, opts.bits, opts, diag)
        plan.append([site, w, diag, bq, _choice(site.weight, w, bq, opts.scheme, diag)])
    if opts.bits == 4 and opts.scheme != "grid":  # the grid is exact: nothing to promote
        _promote(plan, opts, budget)
    return [(site, bq, choice) for site, _, _, bq, choice in plan]


def _promote(plan: list, opts: QuantOptions, budget: int) -> None:
    """Largest weighted error first, while it exceeds promote_factor x the median and fits."""
    errors = np.array([p[4].error for p in plan])
    median = float(np.median(errors)) if len(errors) else 0.0
    zeros = opts.scheme != "rtn_sym"
    spent = sum(_packed_bytes(p[4].shape, 4, opts.block_size, zeros) for p in plan)
    for i in np.argsort(-errors, kind="stable"):
        site, w, diag, _, choice = plan[i]
        extra = _packed_bytes(choice.shape, 8, opts.block_size, zeros) - _packed_bytes(choice.shape, 4, opts.block_size, zeros)
        if choice.error <= opts.promote_factor * median or spent + extra > budget:
            continue
        bq = _quantize(w, 8, opts, diag)
        plan[i][3], plan[i][4] = bq, _choice(site.weight, w, bq, opts.scheme, diag)
        spent += extra


def quantize_onnx(src: Path, dst: Path, options: QuantOptions = QuantOptions(),
                  diags: dict[str, np.ndarray] | None = None, gram: np.ndarray | None = None) -> QuantReport:
    """Write the quantized ``dst`` (inline weights, byte-identical for the same inputs); ``gram``
    is ``head_gram``'s, for ``head_scheme="gptq"``."""
    import onnx
    from onnx import numpy_helper

    options.check(diags is not None)
    if options.head_scheme == "gptq" and gram is None:
        raise QuantizeError("head scheme 'gptq' needs the head's calibration Gram", "pass gram=head_gram(model, windows)")
    model = onnx.load(str(src))
    fp32_bytes = Path(src).stat().st_size
    head = tied_head(model) if options.head_bits else None
    head_w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == head.weight)) if head else None
    head_bytes = _head_bytes(head_w.shape, options) if head else 0
    plan = _plan(model, options, diags, int(options.max_ratio * fp32_bytes) - head_bytes - _other_bytes(model))
    rw = Rewrite()
    for group in _groups(plan, options.fuse):
        if len(group) == 1:
            replace_matmul(rw, model, group[0][0], group[0][1], options.accuracy_level)
        else:
            replace_fused(rw, model, [g[0] for g in group], [g[1] for g in group], options.accuracy_level)
    layers = [choice for _, _, choice in plan]
    if head is not None:
        bq, residual = quantize_head(head_w, options, gram)
        replace_tied_head(rw, model, head, bq, options.head_accuracy_level, residual)
        choice = _choice(head.weight, head_w, bq, options.head_scheme, (diags or {}).get(head.activation))
        layers.append(replace(choice, role="tied_head"))
    rw.apply(model)
    model.opset_import.extend([] if any(o.domain == "com.microsoft" for o in model.opset_import)
                              else [onnx.helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(model, str(dst))
    return QuantReport(str(dst), options, Path(dst).stat().st_size, fp32_bytes, tuple(layers))


def quantize_head(table: np.ndarray, opts: QuantOptions, gram: np.ndarray | None) -> tuple[bqm.BlockQuant, bqm.BlockQuant | None]:
    """The tied table [vocab, hidden]: (what the head reads, the lookup's residual or None).

    ``rtn_sym``: symmetric RTN, one table; at 8 bits a GGUF Q8_0 table comes back exactly (amax /
    127). ``gptq``: the head at 4 bits by GPTQ (a decode step reads 17.7 MB of SmolLM2's table
    instead of 31.8), and the lookup adds ``table - head`` at 4 bits, symmetric: embeddings at
    about 8 bits (SmolLM2: +0.04 pp perplexity over an int8 lookup, where a 4-bit lookup alone
    costs +2.0 pp); the file holds 16 % more than the int8 table."""
    if opts.head_scheme == "rtn_sym":
        return bqm.quantize_rtn(table, opts.head_bits, opts.block_size, symmetric=True), None
    head = gptq(table, gram, opts.head_bits, opts.block_size)
    return head, bqm.quantize_rtn(table - bqm.dequantize(head), 4, opts.block_size, symmetric=True)


def _head_bytes(shape: tuple[int, int], opts: QuantOptions) -> int:
    if opts.head_scheme == "rtn_sym":
        return _packed_bytes(shape, opts.head_bits, opts.block_size, False)
    unpacked_zeros = shape[0] * (shape[1] // opts.block_size)
    return _packed_bytes(shape, 4, opts.block_size, True) + unpacked_zeros + _packed_bytes(shape, 4, opts.block_size, False)


def _groups(plan: list, fuse: bool) -> list[list]:
    """Plan entries by activation and storage kind, in graph order; singletons unless ``fuse``."""
    if not fuse:
        return [[entry] for entry in plan]
    groups: dict[tuple[str, int], list] = {}
    for entry in plan:
        bq = entry[1]
        groups.setdefault((entry[0].activation, bq.bits, bq.zeros is None, bq.offsets is None), []).append(entry)
    return list(groups.values())


def _other_bytes(model: Any) -> int:
    """Bytes of everything but the weight matrices (norms, RoPE tables, graph)."""
    head = tied_head(model)
    sites = {s.weight for s in weight_sites(model)} | ({head.weight, head.folded} if head else set())
    return sum(t.ByteSize() for t in model.graph.initializer if t.name not in sites) + 200_000


def write_report(report: QuantReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
