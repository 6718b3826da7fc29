"""edgekit.llm._gptq: GPTQ must beat the per-block search and round-to-nearest on the output
error it minimizes, on inputs whose channels are correlated (as a decoder's hidden states are)."""
from __future__ import annotations

import numpy as np

from edgekit.llm import _blockquant as bqm
from edgekit.llm._gptq import gptq


def _inputs(rows: int, seed: int) -> np.ndarray:
    """64 channels driven by 8 factors, plus a little noise: strongly correlated."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).standard_normal((8, 64))
    return rng.standard_normal((rows, 8)) @ mixing + 0.1 * rng.standard_normal((rows, 64))


def _output_error(w: np.ndarray, bq: bqm.BlockQuant, x: np.ndarray) -> float:
    return float(np.linalg.norm(x @ (w - bqm.dequantize(bq)).T) / np.linalg.norm(x @ w.T))


def test_gptq_beats_search_and_rtn_on_calibration_and_held_out_inputs() -> None:
    w = np.random.default_rng(1).standard_normal((48, 64)).astype(np.float32)
    calibration, held_out = _inputs(2048, seed=0), _inputs(512, seed=5)
    gram = calibration.T @ calibration
    ours = gptq(w, gram)
    search = bqm.quantize_search(w, 4, 32, np.diag(gram).astype(np.float32))
    rtn = bqm.quantize_rtn(w, 4, 32, symmetric=False)
    assert ours.q.shape == w.shape and ours.scales.shape == (48, 2) and int(ours.q.max()) <= 15
    for x in (calibration, held_out):
        assert _output_error(w, ours, x) < 0.7 * min(_output_error(w, search, x), _output_error(w, rtn, x))
    assert np.array_equal(gptq(w, gram).q, ours.q)  # deterministic

