"""Output-agreement metrics used by verification, accuracy and the device runner's report."""
from __future__ import annotations

import numpy as np


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], classification: bool) -> dict:
    """Max absolute error, cosine similarity (all outputs flattened), top-1 agreement."""
    ref = np.concatenate([reference[k].reshape(len(reference[k]), -1) for k in sorted(reference)], axis=1).astype(np.float64)
    out = np.concatenate([actual[k].reshape(len(actual[k]), -1) for k in sorted(reference)], axis=1).astype(np.float64)
    per_sample = per_sample_cosine(ref, out)
    result = {"max_abs_err": float(np.max(np.abs(ref - out))), "cosine": cosine(ref, out),
              "cosine_mean": float(per_sample.mean()), "cosine_min": float(per_sample.min()),
              "max_abs_ref": float(np.max(np.abs(ref)))}
    if classification:
        first = sorted(reference)[0]
        a = reference[first].reshape(len(ref), -1).argmax(1)
        b = actual[first].reshape(len(ref), -1).argmax(1)
        result["top1_agreement"] = float(np.mean(a == b))
    return result


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / denom) if denom else float(np.array_equal(a, b))


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
