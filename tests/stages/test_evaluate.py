"""The Evaluate stage for a model without a task: the cosine of its outputs to the reference's, on
the verification split when the set has no eval split (what ``edgekit search --min-cosine`` bounds)."""
from __future__ import annotations

import numpy as np

from edgekit.options import QualitySplit

TASKLESS = '''
import torch, torch.nn as nn
CALIBRATION = "photos"  # no TASK: random weights, outputs compared by cosine
INPUT_NAMES = ["input"]
OUTPUT_NAMES = ["features"]


def factory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 7, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))
    return model.eval(), (torch.zeros(1, 3, 224, 224),)
'''


def test_a_taskless_model_is_judged_by_output_cosine(tmp_path, build_bundle):
    (tmp_path / "taskless.py").write_text(TASKLESS)
    overlay = tmp_path / "ort-only.toml"
    overlay.write_text("[tflite]\nenabled = false\n")
    manifest = build_bundle(tmp_path / "out", "host", f"{tmp_path / 'taskless.py'}:factory", latency_runs=0, overlay=overlay)
    accuracy = manifest["accuracy"]
    assert manifest["task"] is None and accuracy["metric"] == "output_cosine"
    assert accuracy["dataset"] == "photos:verification" and accuracy["samples"] == 8 and accuracy["reference"] == 1.0
    int8 = [a["file"] for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert int8 and all(0.9 < accuracy["per_artifact"][f] <= 1.0 + 1e-9 for f in int8)
    assert all(accuracy["min_per_artifact"][f] <= accuracy["per_artifact"][f] for f in int8)
    fp32 = [a["file"] for a in manifest["artifacts"] if a["precision"] == "fp32"]
    assert all(accuracy["per_artifact"][f] > 0.99999 for f in fp32)


def test_the_search_and_heldout_halves_interleave_and_cover_the_split():
    values = np.arange(9)
    search, heldout = QualitySplit.SEARCH.take(values), QualitySplit.HELDOUT.take(values)
    assert list(search) == [0, 2, 4, 6, 8] and list(heldout) == [1, 3, 5, 7]
    assert QualitySplit.ALL.take(values) is values and QualitySplit.SEARCH.take(None) is None
