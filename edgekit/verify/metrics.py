"""Task metrics (top-1, embedding cosine, perplexity, next-token agreement): the accuracy stage's
and ``edgekit.text``'s one home. Output agreement against tolerances is ``edgekit.verify.rule``."""
from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.reshape(len(labels), -1).argmax(1) == labels))


def per_sample_cosine(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Cosine of each sample's output with its reference (embeddings: one per sentence)."""
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = actual.reshape(len(actual), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target token under its logits (``[..., V]`` and ``[...]``),
    in float64 (log-softmax shifted by the maximum, so large logits do not overflow)."""
    lg = np.asarray(logits, dtype=np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)[..., 0]


def causal_lm_perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Perplexity of logits ``[N, ..., T, V]`` on their own input windows ``[N, ..., T]``:
    position ``t`` predicts token ``t + 1`` (so ``T - 1`` scored positions per window)."""
    vocab = logits.shape[-1]
    lg = logits.reshape(len(logits), -1, vocab)[:, :-1]
    target = tokens.reshape(len(tokens), -1)[:, 1:]
    return float(np.exp(token_nll(lg, target).mean()))


def next_token_agreement(reference: np.ndarray, actual: np.ndarray) -> float:
    """Fraction of positions whose top-1 next token agrees with the reference (logits ``[..., V]``
    of one shape). A position whose logits hold NaN/Inf never agrees: ``argmax`` would pick the
    first NaN, so two broken models would "agree" on it."""
    a, b = np.asarray(reference), np.asarray(actual)
    if a.shape != b.shape:
        raise ValueError(f"logit shapes differ: {list(a.shape)} vs {list(b.shape)}")
    finite = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    return float(np.mean((a.argmax(-1) == b.argmax(-1)) & finite))
