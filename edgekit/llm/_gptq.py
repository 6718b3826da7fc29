"""GPTQ (Frantar et al., 2022) for one weight matrix, in ``MatMulNBits``' block layout.

Used for the tied embedding / LM head at 4 bits, where it is the difference between an int4 head
that costs perplexity and one that nearly does not (SmolLM2-135M, held-out perplexity over the
int8 head: round-to-nearest +15.3 pp, the per-block search +2.9 pp, this +1.4 pp;
``benchmarks/llm_head_tradeoff.py``). Measured on the projections too, and kept off them: with
activations from the fp32 model (not re-collected layer by layer) it came out worse than the
per-block search there (+9.3 % against +6.6 %), whose blocks sit closer to the source's Q4_1 grid.

How: the columns are quantized in order, and each one's rounding error is spread over the columns
not yet quantized through the upper Cholesky factor of the damped inverse Gram ``X^T X`` of the
calibration inputs (the standard formulation, with lazy updates per block). Each block's scale
and zero point are chosen when the block starts, by the per-block search of ``_blockquant`` on
the weights as updated so far (min-max there measured +0.4 pp).

Why our own and not ORT's ``GPTQWeightOnlyQuantConfig`` (``MatMulNBitsQuantizer``): that one
quantizes every ``MatMul`` of a graph through a data reader and writes its own nodes; the tied
table here is one ``MatMulNBits`` weight also read by ``GatherBlockQuantized`` with a residual
beside it (``edgekit.llm._graph``), and the block parameters come from the search above.
"""
from __future__ import annotations

import numpy as np

from edgekit.llm import _blockquant as bqm

__all__ = ["gptq"]

DAMP = 0.01  # x the mean diagonal of the Gram: the usual GPTQ damping (0.1 measured +0.06 pp)


def gptq(w: np.ndarray, gram: np.ndarray, bits: int = 4, block: int = 32) -> bqm.BlockQuant:
    """``w`` [N, K] quantized against the calibration Gram [K, K] of its inputs."""
    n, k = w.shape
    work = w.astype(np.float64).copy()
    upper = np.linalg.cholesky(np.linalg.inv(gram + DAMP * np.mean(np.diag(gram)) * np.eye(k))).T
    diag = np.diag(gram).astype(np.float32)
    top = (1 << bits) - 1
    codes = np.zeros((n, k), np.uint8)
    scales = np.zeros((n, k // block), np.float32)
    zeros = np.zeros((n, k // block), np.uint8)
    for start in range(0, k, block):
        end = start + block
        chosen = bqm.quantize_search(work[:, start:end].astype(np.float32), bits, block, diag[start:end])
        scales[:, start // block], zeros[:, start // block] = chosen.scales[:, 0], chosen.zeros[:, 0]
        s, z = chosen.scales[:, 0].astype(np.float64), chosen.zeros[:, 0].astype(np.float64)
        errors = np.zeros((n, block))
        for j, col in enumerate(range(start, end)):
            codes[:, col] = np.clip(np.rint(work[:, col] / s) + z, 0, top)
            errors[:, j] = (work[:, col] - s * (codes[:, col] - z)) / upper[col, col]
            work[:, col + 1:end] -= np.outer(errors[:, j], upper[col, col + 1:end])
        work[:, end:] -= errors @ upper[start:end, end:]
    return bqm.BlockQuant(codes, scales, zeros, bits, block, (("gptq", scales.size),))
