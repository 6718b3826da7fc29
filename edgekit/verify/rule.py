"""The tolerance rule, output agreement and verdict semantics of a build, in one place.

The device runner (``edgekit/runner/edgekit_runner.py``) is copied into every bundle and must
stay standalone, so the rule's code lives there and is re-exported here; build stages import it
from this module only, which makes the build's and the device's verdicts one rule:

- ``compare``: output agreement, worst case over the outputs (max |err|, ``cosine`` over the
  flattened batch, per-sample cosine, top-1 agreement for classifiers).
- ``broken_bounds``: every tolerance that is set must hold; NaN/Inf outputs never pass.
- ``semantics``: which arithmetic judges an artifact: this CPU's kernels when it computes like
  the target (TFLite always), else ONNX Runtime's reference semantics (``reference_model``).
- ``int8_isa``: the int8 instruction set of the CPU whose kernels produced a figure.

``absolute_tolerance`` turns a profile's per-precision tolerance into the absolute numbers the
manifest, and the runner that reads it, carry.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgekit.runner.edgekit_runner import broken_bounds, compare, cosine, int8_isa, reference_model, semantics
from edgekit.targets import Tolerance

__all__ = ["absolute_tolerance", "broken_bounds", "compare", "cosine", "int8_isa", "reference_model", "semantics"]


def absolute_tolerance(tol: Tolerance, reference: Mapping[str, np.ndarray], classification: bool) -> dict:
    """``tol`` with ``max_rel_err`` made absolute (relative to the largest reference output), so
    one profile fits models with different output scales; top-1 agreement only for classifiers."""
    scale = max(float(max(abs(v).max() for v in reference.values())), 1e-6)
    out = {"max_abs_err": tol.max_rel_err * scale if tol.max_rel_err is not None else None,
           "min_cosine": tol.min_cosine}
    if classification:
        out["min_top1_agreement"] = tol.min_top1_agreement
    return out
