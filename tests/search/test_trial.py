"""One trial: ``--trial-time`` stops a build that runs too long, and the trial is recorded failed."""
from __future__ import annotations

import threading
import time

import pytest

from edgekit.search.trial import TrialTimeout, run_trial, time_limit


def test_a_trial_past_its_time_is_stopped_and_recorded_failed(tmp_path):
    job = {"target": "rpi4", "model": None, "out": str(tmp_path), "seed": 0, "latency_runs": 1,
           "metric": "top1_drop_pp", "devices": None, "trial_time_s": 0.5}
    started = time.monotonic()
    result = run_trial(job, 0, {"ort": {"enabled": False}})
    assert time.monotonic() - started < 20  # a full digits build takes longer than this on 2 cores
    assert result["error"].startswith("TrialTimeout: the trial ran past --trial-time 0.5s")
    folder = tmp_path / "trials" / "0000"
    assert "TrialTimeout" in (folder / "error.txt").read_text()
    assert not (folder / "bundle").exists()  # nothing half-written left as if it were a bundle
    assert sorted(p.name for p in folder.iterdir()) == ["error.txt", "overlay.toml"]


def test_the_limit_is_lifted_after_the_block_and_off_outside_the_main_thread():
    with time_limit(0.2):
        pass
    time.sleep(0.3)  # no alarm left behind
    seen = []

    def worker() -> None:
        with time_limit(0.05):  # signals reach the main thread only: no limit here, and no error
            time.sleep(0.1)
        seen.append("done")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == ["done"]
    with pytest.raises(TrialTimeout), time_limit(0.05):
        time.sleep(1)


def _row(number: int, size: int, ms: float, quality: float = 1.0, feasible: bool = True, duplicate_of: int | None = None) -> dict:
    return {"number": number, "state": "COMPLETE", "feasible": feasible, "bytes": size, "latency_ms": ms, "quality": quality,
            "duplicate_of": duplicate_of}


def test_candidates_are_never_larger_than_the_default_and_best_first():
    from edgekit.budget import Metric
    from edgekit.search.result import candidates

    default = {"bytes": 100, "latency_ms": 1.0}
    rows = [_row(0, 104, 0.5),  # faster but larger than the default: never a candidate
            _row(1, 98, 0.95),
            _row(2, 60, 0.99),
            _row(3, 50, 0.9, feasible=False),  # over budget
            _row(4, 98, 0.95, duplicate_of=1),  # the same build again
            _row(5, 99, 0.99)]  # dominated by 1
    assert [r["number"] for r in candidates(rows, default, Metric.TOP1_DROP)] == [2, 1]
    assert candidates([_row(0, 101, 0.1)], default, Metric.TOP1_DROP) == []


def test_a_budget_finer_than_one_heldout_sample_is_said_so():
    from edgekit.budget import MaxDrop
    from edgekit.search.result import resolution_notes

    (note,) = resolution_notes(MaxDrop.parse("0.5pp"), {"samples": 180})
    assert "finer than one held-out sample (0.56 pp of 180)" in note
    assert resolution_notes(MaxDrop.parse("1pp"), {"samples": 180}) == []
    assert resolution_notes(MaxDrop.parse("cos:0.998"), {"samples": 10}) == []
