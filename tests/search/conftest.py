"""A tiny search shared by the search tests: the tiny CNN for an ORT-only rpi4 profile, whose
first trial's build fails (its factory raises on its second call: the first is the default build)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.paths import targets_dir

FLAKY = '''
import pathlib
import torch, torch.nn as nn
CALIBRATION = "digits"
TASK = "classification"
INPUT_NAMES = ["input"]
OUTPUT_NAMES = ["logits"]
CALLS = pathlib.Path(__file__).with_name("calls")


def factory():
    CALLS.mkdir(exist_ok=True)
    call = len(list(CALLS.iterdir()))
    (CALLS / str(call)).touch()
    if call == 1:
        raise RuntimeError("this build fails on purpose")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return model, (torch.zeros(1, 1, 8, 8),)
'''


@pytest.fixture(scope="package")
def search_setup(tmp_path_factory) -> dict:
    """The model, an ORT-only copy of rpi4 (one quantizer: fast trials) and the search folder."""
    root = tmp_path_factory.mktemp("search")
    (root / "flaky.py").write_text(FLAKY)
    profile = (targets_dir() / "rpi4.toml").read_text(encoding="utf-8")
    profile = profile.replace("[tflite]\nenabled = true", "[tflite]\nenabled = false")
    (root / "rpi4-ort.toml").write_text(profile, encoding="utf-8")
    return {"model": f"{root / 'flaky.py'}:factory", "target": str(root / "rpi4-ort.toml"), "out": root / "out"}


def _options(setup: dict, trials: int, resume: bool):
    from edgekit.search import SearchOptions

    return SearchOptions(target=setup["target"], model=setup["model"], trials=trials, workers=1, out=setup["out"],
                         resume=resume, seed=0, latency_runs=5)


@pytest.fixture(scope="package")
def searched(search_setup) -> dict:
    """2 trials, then resumed to 4: both summaries, the progress lines, and what the study file held
    after the first run (trial numbers with their completion times)."""
    from edgekit.search import search

    lines: list[str] = []
    first = search(_options(search_setup, 2, False), lines.append)
    first_db = study_rows(search_setup["out"] / "study.db")
    second = search(_options(search_setup, 4, True), lines.append)
    return {**search_setup, "first": first, "second": second, "first_db": first_db, "lines": lines}


def study_rows(db: Path) -> list[tuple]:
    """(number, state, datetime_complete) of every trial in an Optuna SQLite study."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT number, state, datetime_complete FROM trials ORDER BY number").fetchall()
