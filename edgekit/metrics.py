"""Output-agreement metrics used by verification, accuracy and the device runner's report."""
from __future__ import annotations

import numpy as np


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], classification: bool) -> dict:
    """Max absolute error, cosine similarity (all outputs flattened), top-1 agreement."""
    ref = np.concatenate([reference[k].reshape(len(reference[k]), -1) for k in sorted(reference)], axis=1).astype(np.float64)
    out = np.concatenate([actual[k].reshape(len(actual[k]), -1) for k in sorted(reference)], axis=1).astype(np.float64)
    result = {"max_abs_err": float(np.max(np.abs(ref - out))), "cosine": cosine(ref, out),
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
