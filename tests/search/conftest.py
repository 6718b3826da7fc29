"""One search shared by the search tests, run the hard way: ``edgekit search`` in a subprocess is
killed with SIGKILL in the middle of a trial, then resumed on a real local Ray runtime with two
workers, where one trial fails on purpose (the model's factory raises when it can claim a token
file the test leaves beside it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.paths import targets_dir

FLAKY = '''
import os, pathlib
import torch, torch.nn as nn
CALIBRATION = "digits"
TASK = "classification"
INPUT_NAMES = ["input"]
OUTPUT_NAMES = ["logits"]
HERE = pathlib.Path(__file__).parent


def factory():
    for token in sorted(HERE.glob("fail-token-*")):
        try:
            os.rename(token, token.with_name("spent-" + token.name))  # atomic: one build claims it
        except FileNotFoundError:
            continue
        raise RuntimeError("this build fails on purpose")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return model, (torch.zeros(1, 1, 8, 8),)


def crash():
    os._exit(3)  # the worker process dies: no exception, no result


def threads():
    """The model, after noting the thread pools its worker was given."""
    seen = [os.environ.get(k, "-") for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")] + [str(torch.get_num_threads())]
    (HERE / f"threads-{os.getpid()}.txt").write_text(" ".join(seen))
    return factory()
'''


@pytest.fixture(scope="package")
def search_setup(tmp_path_factory) -> dict:
    """The model, an ORT-only copy of rpi4 (one quantizer: fast trials) and the search folder."""
    root = tmp_path_factory.mktemp("search")
    (root / "flaky.py").write_text(FLAKY)
    profile = (targets_dir() / "rpi4.toml").read_text(encoding="utf-8")
    profile = profile.replace("[tflite]\nenabled = true", "[tflite]\nenabled = false")
    (root / "rpi4-ort.toml").write_text(profile, encoding="utf-8")
    return {"root": root, "model": f"{root / 'flaky.py'}:factory", "target": str(root / "rpi4-ort.toml"), "out": root / "out"}


def search_options(setup: dict, trials: int, resume: bool, **kwargs):
    from edgekit.search import SearchOptions

    return SearchOptions(target=setup["target"], model=setup["model"], trials=trials, out=setup["out"], resume=resume,
                         seed=0, latency_runs=5, **kwargs)


def study_rows(db: Path) -> list[tuple]:
    """(number, state, datetime_complete) of every trial in an Optuna SQLite study."""
    import sqlite3

    if not db.is_file():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT number, state, datetime_complete FROM trials ORDER BY number").fetchall()
        except sqlite3.OperationalError:  # the tables are not created yet
            return []


def built_trials(db: Path) -> int:
    """Trials of a study that are builds: every trial but those reusing another's figures."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM trials WHERE trial_id NOT IN "
                            "(SELECT trial_id FROM trial_user_attributes WHERE key = 'duplicate_of')").fetchone()[0]


def _kill_mid_trial(setup: dict, seconds: float = 600) -> list[tuple]:
    """Start the search CLI, SIGKILL its whole process group once two trials are complete and a
    third is running; the study rows at that moment."""
    cmd = [sys.executable, "-m", "edgekit", "search", setup["model"], "--target", setup["target"], "--trials", "8",
           "--workers", "1", "--latency-runs", "5", "--out", str(setup["out"])]
    log = open(setup["root"] / "killed-search.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            rows = study_rows(setup["out"] / "study.db")
            if sum(r[1] == "COMPLETE" for r in rows) >= 2 and any(r[1] == "RUNNING" for r in rows):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return study_rows(setup["out"] / "study.db")  # as the killed search left it (it may have asked one more)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    pytest.fail(f"the search never had a trial running after two complete ones: {(setup['root'] / 'killed-search.log').read_text()}")


@pytest.fixture(scope="package")
def searched(search_setup) -> dict:
    """Killed mid-search, then resumed on a local Ray runtime (``num_cpus=2``, 2 workers) for 4 more
    trials, one failing on purpose: the
    rows and trial manifests' mtimes at the kill, the resumed summary and its progress lines."""
    from edgekit.search import search

    at_kill = _kill_mid_trial(search_setup)
    trials = search_setup["out"] / "trials"
    mtimes = {p.parent.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/bundle/manifest.json")}
    (search_setup["root"] / "fail-token-0").touch()
    lines: list[str] = []
    # the killed run's builds (a trial reusing an earlier one's figures is not one; one asked but not
    # yet started counts, it is told failed on resume) and 4 more on Ray
    total = built_trials(search_setup["out"] / "study.db") + 4
    resumed = search(search_options(search_setup, total, True, workers=2, ray="local"), lines.append)
    return {**search_setup, "at_kill": at_kill, "mtimes": mtimes, "second": resumed, "lines": lines, "total": total}
