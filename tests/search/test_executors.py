"""Where trials run: a worker that dies (os._exit in the model's factory) fails its trial only,
and the next trial still runs, in the local process pool and on a real local Ray runtime; each
trial builds with the thread share it was given, and records it for its rebuild."""
from __future__ import annotations

import pytest

from edgekit.search import SearchOptions
from edgekit.search.executors import RAY_LOCAL, open_pool
from edgekit.search.trial import trial_job


@pytest.mark.parametrize("ray", [None, RAY_LOCAL])
def test_a_crashed_worker_fails_its_trial_and_the_next_one_runs(search_setup, tmp_path, ray):
    import tomllib

    from edgekit.runner.edgekit_runner import load_manifest

    options = SearchOptions(target=search_setup["target"], model=search_setup["model"], out=tmp_path / "s", latency_runs=2)
    job = {**trial_job(options), "threads": 1}  # as two workers on a 2-core host get
    pool = open_pool(ray, workers=1, threads=1)
    for old in search_setup["root"].glob("threads-*.txt"):
        old.unlink()
    try:
        pool.submit({**job, "model": job["model"].replace(":factory", ":crash")}, 0, {})
        results = dict(pool.finished())
        pool.submit({**job, "model": job["model"].replace(":factory", ":threads")}, 1, {})
        results.update(pool.finished())
    finally:
        pool.close()
    died = "worker died: BrokenProcessPool" if ray is None else "Ray task failed: "
    assert results[0]["error"].startswith(died), results[0]
    assert results[1]["artifact"] == "model_int8.ort" and results[1]["bytes"] > 0 and results[1]["figure"] <= 1.0
    assert ("local Ray runtime" if ray else "local process pool") in pool.where
    (noted,) = search_setup["root"].glob("threads-*.txt")
    assert noted.read_text() == "1 1 1"  # OpenMP, TensorFlow and torch pools: the trial's share
    trial = tmp_path / "s" / "trials" / "0001"
    assert tomllib.loads((trial / "overlay.toml").read_text())["build"] == {"threads": 1}  # its rebuild uses it too
    timed = [a["host_latency_ms"]["threads"] for a in load_manifest(trial / "bundle")["artifacts"]]
    assert timed and set(timed) == {1}


def test_joining_a_cluster_that_is_not_there_is_one_clear_error():
    from edgekit.errors import UnsupportedError
    from edgekit.search.executors import RayTrials

    with pytest.raises(UnsupportedError, match="cannot join the Ray cluster at 127.0.0.1:1"):
        RayTrials("127.0.0.1:1", workers=1)
