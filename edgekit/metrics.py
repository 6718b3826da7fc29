"""Task metrics of the accuracy stage (top-1, embedding cosine, perplexity). Output agreement
against tolerances is the device runner's ``compare``/``broken_bounds``, shared by the build."""
from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.reshape(len(labels), -1).argmax(1) == labels))


def per_sample_cosine(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Cosine of each sample's output with its reference (embeddings: one per sentence)."""
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = actual.reshape(len(actual), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def causal_lm_perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Perplexity of logits ``[N, ..., T, V]`` on their own input windows ``[N, ..., T]``:
    position ``t`` predicts token ``t + 1`` (so ``T - 1`` scored positions per window)."""
    vocab = logits.shape[-1]
    lg = logits.reshape(len(logits), -1, vocab)[:, :-1].astype(np.float64)
    target = tokens.reshape(len(tokens), -1)[:, 1:]
    lg = lg - lg.max(-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, target[..., None], axis=-1)
    return float(np.exp(nll.mean()))


def next_token_agreement(reference: np.ndarray, actual: np.ndarray) -> float:
    """Fraction of positions whose top-1 next token agrees with the reference."""
    return float(np.mean(reference.argmax(-1) == actual.argmax(-1)))
