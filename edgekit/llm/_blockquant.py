"""Block-wise weight quantization in numpy, in ONNX Runtime's ``MatMulNBits`` layout.

A weight ``W`` is handled as ``[N, K]`` (output rows, input columns: the transpose of the
graph's ``[in, out]`` initializer), cut into blocks of ``block`` along K. A block stores unsigned
codes ``q``, one float scale ``s`` and one integer zero point ``z``: ``w ~ s * (q - z)``.

Why numpy and not ORT's ``MatMulNBitsQuantizer`` for the chosen scheme: the quantizer rounds each
block one fixed way (RTN, HQQ, GPTQ, k-quant) and exposes no per-block error, while the choice
here is made per block by the activation-weighted error (``diag(X^T X)`` of the calibration
activations), which needs the candidates side by side. The codes are ORT's format exactly, so
the kernels are ORT's.

Why integer zero points although the source grid (GGUF Q4_1: ``d * q + m``) would come back
exactly with fractional ones: ORT 1.32's CPU ``MatMulNBits`` runs float zero points through a slow
dequantizing path (about 15x the uint8 kernel, measured on a 1536 x 576 matrix) and refuses them
for 8 bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockQuant", "quantize_rtn", "quantize_search", "quantize_grid", "dequantize", "weighted_error", "pack"]

# the candidates' range shrink factors: clipping a block's outliers often lowers its error
SHRINKS = (1.0, 0.96, 0.92, 0.88, 0.84, 0.8)


@dataclass(frozen=True)
class BlockQuant:
    """Codes ``q`` [N, K] uint8, ``scales`` [N, K // block] float32, ``zeros`` [N, K // block]
    uint8 (``None``: symmetric, the kernel's default zero point ``2 ** (bits - 1)``)."""

    q: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    bits: int
    block: int
    # how many blocks took each candidate (the search's record; RTN has one entry)
    picks: tuple[tuple[str, int], ...] = ()
    # per-block float offsets [N, KB] added to s * (q - z) (``quantize_grid``), applied in the graph
    offsets: np.ndarray | None = None


def _blocks(w: np.ndarray, block: int) -> np.ndarray:
    n, k = w.shape
    return w.reshape(n, k // block, block)


def _codes(b: np.ndarray, s: np.ndarray, z: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(np.rint(b / s[..., None]) + z[..., None], 0, (1 << bits) - 1)


def _safe(s: np.ndarray) -> np.ndarray:
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)


def quantize_rtn(w: np.ndarray, bits: int, block: int, symmetric: bool) -> BlockQuant:
    """Round to nearest: symmetric (``s = amax / (2^(b-1) - 1)``, z = 2^(b-1)) or asymmetric
    min-max (``s = (max - min) / (2^b - 1)``, z = round(-min / s)), ORT's default quantizer."""
    b = _blocks(w.astype(np.float32), block)
    top = (1 << bits) - 1
    if symmetric:
        s = _safe(np.abs(b).max(-1) / ((1 << (bits - 1)) - 1))
        z = np.full(s.shape, 1 << (bits - 1), np.float32)
    else:
        lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
        s = _safe((hi - lo) / top)
        z = np.clip(np.rint(-lo / s), 0, top)
    q = _codes(b, s, z, bits).astype(np.uint8).reshape(w.shape)
    name = "rtn_sym" if symmetric else "rtn_asym"
    return BlockQuant(q, s, None if symmetric else z.astype(np.uint8), bits, block, ((name, s.size),))


def _block_error(b: np.ndarray, d: np.ndarray, s: np.ndarray, z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-block sum over the block's inputs of diag * (w - s (q - z))^2."""
    return ((b - s[..., None] * (q - z[..., None])) ** 2 * d).sum(-1)


def _candidates(b: np.ndarray, bits: int):
    """(name, s, z) for every candidate: min-max ranges shrunk by SHRINKS with the zero point
    rounded down and up, and the symmetric grid."""
    top = (1 << bits) - 1
    lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
    for g in SHRINKS:
        s = _safe((hi - lo) * g / top)
        zf = -lo * g / s
        for rnd, name in ((np.floor, "lo"), (np.ceil, "hi")):
            yield f"asym{g:g}{name}", s, np.clip(rnd(zf), 0, top)
    yield "sym", _safe(np.abs(b).max(-1) / ((1 << (bits - 1)) - 1)), np.full(lo.shape, 1 << (bits - 1), np.float32)


def quantize_search(w: np.ndarray, bits: int, block: int, diag: np.ndarray) -> BlockQuant:
    """Per block, the candidate with the least activation-weighted error, then one weighted
    least-squares step on its scale (codes kept). Asymmetric min-max RTN is one candidate, so
    the result's weighted error is never above RTN's."""
    b = _blocks(w.astype(np.float32), block)
    d = _blocks(diag.astype(np.float32)[None, :], block)  # [1, KB, block]
    best = None
    names: list[str] = []
    for i, (name, s, z) in enumerate(_candidates(b, bits)):
        q = _codes(b, s, z, bits)
        err = _block_error(b, d, s, z, q)
        names.append(name)
        if best is None:
            best = [err, s, z, q, np.zeros(err.shape, np.int16)]
            continue
        take = err < best[0]
        best[0] = np.where(take, err, best[0])
        best[1], best[2] = np.where(take, s, best[1]), np.where(take, z, best[2])
        best[3] = np.where(take[..., None], q, best[3])
        best[4] = np.where(take, np.int16(i), best[4])
    err, s, z, q, pick = best
    s = _refit_scale(b, d, s, z, q)
    counts = np.bincount(pick.ravel(), minlength=len(names))
    picks = tuple((n, int(c)) for n, c in zip(names, counts) if c)
    return BlockQuant(q.astype(np.uint8).reshape(w.shape), s, z.astype(np.uint8), bits, block, picks)


def _refit_scale(b: np.ndarray, d: np.ndarray, s: np.ndarray, z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """argmin_s sum d (w - s (q - z))^2 with the codes fixed; kept only where it helps."""
    c = q - z[..., None]
    den = (d * c * c).sum(-1)
    fit = np.where(den > 0, (d * b * c).sum(-1) / np.where(den > 0, den, 1), s).astype(np.float32)
    better = _block_error(b, d, fit, z, q) < _block_error(b, d, s, z, q)
    return np.where(better & (fit > 0), fit, s).astype(np.float32)


def quantize_grid(w: np.ndarray, bits: int, block: int) -> BlockQuant | None:
    """The source's own grid ``w = d * q + m`` (GGUF Q4_1: d = (max - min) / 15, m = min), or
    ``None`` if ``w`` is not on one. Stored as symmetric codes (the kernel's default zero point)
    plus a per-block float offset ``m + 2^(b-1) d`` that the graph adds as
    ``blocksum(x) @ offsets``: exact weights with the fast integer-zero-point kernel."""
    b = _blocks(w.astype(np.float32), block)
    lo, top = b.min(-1), (1 << bits) - 1
    d = _safe((b.max(-1) - lo) / top)
    q = np.rint((b - lo[..., None]) / d[..., None])
    if np.abs(q * d[..., None] + lo[..., None] - b).max(initial=0) > 1e-3 * float(d.min(initial=1)):
        return None
    mid = 1 << (bits - 1)
    return BlockQuant(q.astype(np.uint8).reshape(w.shape), d, None, bits, block, (("grid", d.size),),
                      (lo + mid * d).astype(np.float32))


def dequantize(bq: BlockQuant) -> np.ndarray:
    n, k = bq.q.shape
    z = bq.zeros if bq.zeros is not None else np.full(bq.scales.shape, 1 << (bq.bits - 1), np.uint8)
    codes = _blocks(bq.q.astype(np.float32), bq.block) - z[..., None].astype(np.float32)
    blocks = codes * bq.scales[..., None]
    if bq.offsets is not None:
        blocks = blocks + bq.offsets[..., None]
    return blocks.reshape(n, k)


def weighted_error(w: np.ndarray, approx: np.ndarray, diag: np.ndarray) -> float:
    """sum_k diag_k ||W[:, k] - approx[:, k]||^2 relative to the same sum for W: the expected
    output error energy of ``x @ W^T`` over the calibration inputs (diagonal approximation)."""
    d = diag.astype(np.float64)[None, :]
    return float(((w - approx) ** 2 * d).sum() / max((w.astype(np.float64) ** 2 * d).sum(), 1e-30))


def pack(bq: BlockQuant) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``MatMulNBits`` inputs: B [N, KB, block * bits / 8] uint8 (4 bits: low nibble first),
    scales [N, KB] float32, zero points [N, ceil(KB * bits / 8)] uint8 or ``None``."""
    n, k = bq.q.shape
    kb = k // bq.block
    if bq.bits == 8:
        data, zeros = bq.q, bq.zeros
    else:
        data = bq.q[:, 0::2] | (bq.q[:, 1::2] << 4)
        zeros = bq.zeros
        if zeros is not None:
            zeros = np.pad(zeros, ((0, 0), (0, kb % 2)))
            zeros = zeros[:, 0::2] | (zeros[:, 1::2] << 4)
    return (np.ascontiguousarray(data, np.uint8).reshape(n, kb, -1), bq.scales.astype(np.float32),
            None if zeros is None else np.ascontiguousarray(zeros, np.uint8))
