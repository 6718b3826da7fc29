"""The device runner's TFLite decoder (to be merged into ``edgekit/runner/edgekit_runner.py``).

Standalone like the runner: stdlib + numpy + a LiteRT interpreter (``ai_edge_litert`` or
``tflite_runtime``), Python 3.9. Same shape as the runner's ONNX Runtime decoder:
``step(ids, past_len, logit_rows) -> logits``, ``reset()``, ``kv_cache_bytes``.

The artifact (``edgekit.llm.tflite``) has static shapes: signature ``prefill`` takes T =
``prefill_chunk`` tokens, ``decode`` T = 1; both take the whole cache buffer
``[context, layers, kv_heads, head_dim]`` as ``past_key``/``past_value`` (P = context) and an
``attention_bias`` [T, context + T] that masks the rows not yet written (-1e9) and the future
of the chunk. A short chunk is padded at its end: padded queries come after every real one, so
the causal mask keeps them out of the real rows, and their keys are never written to the cache.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MASKED = -1e9  # edgekit.llm.model.MASKED


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


class TFLiteKVDecoder:
    """A KV-contract ``.tflite`` (signatures ``prefill`` and ``decode``) with the caller-owned
    cache: one preallocated buffer per key and value, passed whole, rows written after each step.

    ``llm`` is the manifest's ``"llm"`` object (``layers``, ``kv_heads``, ``head_dim``,
    ``context``, ``prefill_chunk``); ``interpreter`` a LiteRT ``Interpreter`` class (default: the
    first that imports)."""

    def __init__(self, path: str, llm: dict, threads: int = 1, interpreter: Any | None = None) -> None:
        cls = interpreter or _interpreter_class()
        # LiteRT's Python Interpreter uses 1 thread unless told: always pass it
        self.interpreter = cls(model_path=str(path), num_threads=int(threads))
        self.context, self.chunk = int(llm["context"]), int(llm["prefill_chunk"])
        shape = (self.context, int(llm["layers"]), int(llm["kv_heads"]), int(llm["head_dim"]))
        self.key = np.zeros(shape, np.float32)
        self.value = np.zeros(shape, np.float32)
        self._runners = {name: self.interpreter.get_signature_runner(name) for name in ("prefill", "decode")}
        self.vocab = int(self._runners["decode"].get_output_details()["logits"]["shape"][-1])

    @property
    def kv_cache_bytes(self) -> int:
        return int(self.key.nbytes + self.value.nbytes)

    def reset(self) -> None:
        """Forget the cache (the mask hides unwritten rows; zeroing keeps stale values out of sight)."""
        self.key.fill(0.0)
        self.value.fill(0.0)

    def step(self, ids: Sequence[int], past_len: int, logit_rows: Sequence[int]) -> np.ndarray:
        """Feed ``ids`` at positions ``past_len ..``; return logits [len(logit_rows), vocab] for
        those rows of ``ids``. Longer than one chunk: fed chunk by chunk."""
        ids, rows = [int(i) for i in ids], [int(r) for r in logit_rows]
        if not ids or past_len < 0 or past_len + len(ids) > self.context:
            raise ValueError(f"{len(ids)} tokens after {past_len} do not fit the context of {self.context}")
        if any(not 0 <= r < len(ids) for r in rows):
            raise ValueError(f"logit rows {rows} outside the {len(ids)} tokens")
        parts = []
        for start in range(0, len(ids), self.chunk):
            chunk = ids[start:start + self.chunk]
            wanted = [r - start for r in rows if start <= r < start + len(chunk)]
            logits = self._run(chunk, past_len + start, wanted)
            if wanted:
                parts.append(logits)
        if not parts:
            return np.zeros((0, self.vocab), np.float32)
        return np.concatenate(parts)

    def _run(self, ids: list, past_len: int, rows: list) -> np.ndarray:
        """One signature call on at most one chunk; writes its rows into the cache."""
        n = len(ids)
        t = 1 if n == 1 else self.chunk
        name = "decode" if t == 1 else "prefill"
        padded = ids + [0] * (t - n)
        # padded rows sit past the real ones; their positions are clamped into the RoPE table
        positions = np.minimum(np.arange(past_len, past_len + t), self.context - 1)
        wanted = (rows + [rows[-1] if rows else 0] * t)[:t]
        out = self._runners[name](
            input_ids=np.asarray([padded], np.int64), position_ids=positions[None].astype(np.int64),
            attention_bias=self._bias(t, past_len), past_key=self.key, past_value=self.value,
            logit_positions=np.asarray(wanted, np.int64))
        self.key[past_len:past_len + n] = out["key"][:n]
        self.value[past_len:past_len + n] = out["value"][:n]
        return np.asarray(out["logits"][:len(rows)], np.float32)

    def _bias(self, t: int, past_len: int) -> np.ndarray:
        """[t, context + t]: the written cache rows and the causal part of the chunk are 0."""
        bias = np.full((t, self.context + t), MASKED, np.float32)
        bias[:, :past_len] = 0.0
        bias[:, self.context:] = np.triu(np.full((t, t), MASKED, np.float32), 1)
        return bias
