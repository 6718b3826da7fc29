"""edgekit.verify.rule: the build's one home of the tolerance rule is the device runner's."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.runner import edgekit_runner
from edgekit.targets import Tolerance
from edgekit.verify import rule


def test_the_rule_is_the_runners():
    for name in ("compare", "broken_bounds", "cosine", "semantics", "reference_model", "int8_isa"):
        assert getattr(rule, name) is getattr(edgekit_runner, name)


def test_absolute_tolerance_scales_by_the_largest_reference_output():
    reference = {"a": np.array([[0.5, -4.0]]), "b": np.array([[2.0]])}
    tol = Tolerance(max_rel_err=0.01, min_cosine=0.99, min_top1_agreement=0.9)
    assert rule.absolute_tolerance(tol, reference, classification=True) == {
        "max_abs_err": pytest.approx(0.04), "min_cosine": 0.99, "min_top1_agreement": 0.9}
    assert rule.absolute_tolerance(Tolerance(), reference, classification=False) == {"max_abs_err": None, "min_cosine": None}


def test_all_nan_outputs_fail_the_rule():
    reference = {"y": np.ones((2, 3), np.float32)}
    result = rule.compare({"y": np.full((2, 3), np.nan, np.float32)}, reference, True)
    assert rule.broken_bounds(result, {"max_abs_err": 1.0, "min_cosine": 0.0}) == ["outputs contain NaN or Inf"]
