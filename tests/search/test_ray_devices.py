"""Devices that are Ray nodes: on a cluster whose node advertises a custom resource named after the
profile (here a real local Ray runtime started with ``resources={"rpi4": 1}``), every trial's
artifact and the default build's are timed there, by the bundle's runner, shipped as a task."""
from __future__ import annotations

from edgekit.search import SearchOptions, search


def test_trials_are_timed_on_the_ray_node_that_is_a_device(search_setup, tmp_path):
    import ray

    ray.init(num_cpus=2, resources={"rpi4": 1}, include_dashboard=False, log_to_driver=False, configure_logging=False)
    lines: list[str] = []
    try:
        summary = search(SearchOptions(target=search_setup["target"], model=search_setup["model"], trials=1, out=tmp_path / "s",
                                       latency_runs=3, ray="local"), lines.append)
    finally:
        ray.shutdown()
    assert "[search] timing every trial on the Ray nodes with resource 'rpi4'" in lines
    done = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 1
    for figures in (done[0], summary["default"]["search"]):
        assert figures["latency_where"].startswith("device ray node ") and figures["latency_where"].endswith("(resource rpi4)")
        assert figures["latency_ms"] > 0 and figures["host_latency_ms"] > 0
