"""Per-layer sensitivity of static int8: which layers lose accuracy when quantized.

Each layer with int8 weights (:data:`edgekit.quantize.ort_static.WEIGHT_OPS`) is quantized
*alone*, with the profile's scheme, and the model's outputs on the held-out verification samples
are compared with the float graph's: the mean output cosine and the top-1 agreement. Both graphs
run with ONNX Runtime's reference semantics (integer ops emulated in float, the arithmetic the
device computes), never this host's int8 kernels, so the ranking does not depend on the build
host's CPU (GUIDE.md section 2). ``edgekit search`` keeps the most sensitive layers in float
(``float_nodes``) instead of picking them at random; its report plots this table.

This is the one-at-a-time analysis AIMET's and NNCF's per-layer reports make; it costs one
calibration per layer, so it runs only when asked (``BuildOptions.sensitivity``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.quantize.ort_static import prepare, quantize_qdq, weight_nodes
from edgekit.targets import ORTInt8
from edgekit.verify.metrics import per_sample_cosine

Runner = Callable[[Path], dict[str, np.ndarray]]


def _flat(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([v.reshape(len(v), -1) for v in outputs.values()], axis=1)


def layer_sensitivity(source: Path, calibration: dict[str, np.ndarray], scheme: ORTInt8, scratch: Path, run: Runner,
                      progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per weight layer of ``source`` (its prepared graph): ``node``, ``op``, ``cosine``
    (mean output cosine to the float graph with only that node int8), ``top1_agreement`` and
    ``loss`` (1 - cosine), most sensitive first. ``run(path)`` gives a graph's outputs on the
    held-out samples."""
    prepared = prepare(source, scratch)
    float_outputs = _flat(run(prepared))
    scheme = dataclasses.replace(scheme, float_nodes=())  # each layer alone, nothing excluded
    rows = []
    for index, (node, op) in enumerate(weight_nodes(prepared)):
        if progress:
            progress(f"sensitivity: layer {index + 1}: {node} ({op})")
        target = scratch / f"sensitivity_{index:03d}.onnx"
        quantize_qdq(source, target, calibration, scheme, scratch, only=[node])
        outputs = _flat(run(target))
        cosine = float(per_sample_cosine(float_outputs, outputs).mean())
        agreement = float(np.mean(outputs.argmax(1) == float_outputs.argmax(1)))
        rows.append({"node": node, "op": op, "cosine": round(cosine, 7), "top1_agreement": agreement,
                     "loss": round(1.0 - cosine, 7)})
        target.unlink()
    return sorted(rows, key=lambda r: (-r["loss"], r["node"]))
