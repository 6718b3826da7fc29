"""edgekit.verify.metrics is the one home of the language-model metrics (edgekit.text uses it)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit import text
from edgekit.verify import metrics


def test_text_uses_the_metrics_home():
    assert text.next_token_agreement is metrics.next_token_agreement


def test_perplexity_of_a_callable_equals_the_stage_formula():
    """``text.perplexity`` (a logits function on windows [N, T + 1]) and the accuracy stage's
    ``causal_lm_perplexity`` (logits of [N, T + 1] windows) score the same predictions alike."""
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 7, (3, 6))
    logits = rng.standard_normal((3, 6, 7)) * 3
    table = {w[:-1].tobytes(): lg[:-1] for w, lg in zip(windows, logits)}
    by_callable = text.perplexity(lambda x: table[x[0].tobytes()], windows)
    assert by_callable == pytest.approx(metrics.causal_lm_perplexity(logits, windows), rel=1e-12)
    assert 1.0 < by_callable < 200.0


def test_next_token_agreement_refuses_other_shapes():
    a = np.zeros((2, 4, 5))
    with pytest.raises(ValueError, match=r"logit shapes differ: \[2, 4, 5\] vs \[2, 3, 5\]"):
        metrics.next_token_agreement(a, a[:, :3])


def test_non_finite_logits_never_agree():
    """argmax of a NaN row is 0, so before the fix two all-NaN models "agreed" everywhere."""
    ref = np.eye(4)[None]  # [1, 4 positions, 4 classes]
    broken = ref.copy()
    broken[0, :2] = np.nan
    assert metrics.next_token_agreement(ref, ref) == 1.0
    assert metrics.next_token_agreement(ref, broken) == 0.5
    nan = np.full_like(ref, np.nan)
    assert metrics.next_token_agreement(nan, nan) == 0.0
