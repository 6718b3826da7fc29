"""``edgekit search --host``: every trial's artifact (and the default build's) timed by the
bundle's runner on a device over SSH (the loopback sshd; the device is this machine)."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from edgekit.device.settings import RunnerSettings
from edgekit.search import Devices, SearchOptions, search
from edgekit.search.devices import claim


def test_trials_carry_the_devices_latency(search_setup, sshd, tmp_path):
    devices = Devices(hosts=(sshd.host(),), settings=RunnerSettings(runs=10, warmup=1, min_seconds=0.0),
                      identity=sshd.identity, known_hosts=sshd.known_hosts, python=sys.executable)
    summary = search(SearchOptions(target=search_setup["target"], model=search_setup["model"], trials=2, out=tmp_path / "s",
                                   latency_runs=3, devices=devices))
    done = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 2
    for trial in done + [summary["default"]["search"]]:
        assert trial["latency_where"] == f"device {sshd.host()}", trial
        assert trial["latency_ms"] > 0 and trial["host_latency_ms"] > 0
    assert summary["chosen"] is not None and summary["chosen"]["search"]["latency_where"] == f"device {sshd.host()}"


def test_a_device_runs_one_trial_at_a_time_and_devices_run_in_parallel(tmp_path):
    held: list[tuple[str, float, float]] = []

    def use(duration: float) -> None:
        with claim(tmp_path, ("a@pi1", "b@pi2"), poll_s=0.01) as host:
            start = time.monotonic()
            time.sleep(duration)
            held.append((host, start, time.monotonic()))

    threads = [threading.Thread(target=use, args=(0.5,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted({h for h, _, _ in held}) == ["a@pi1", "b@pi2"]
    for host in ("a@pi1", "b@pi2"):
        spans = sorted((s, e) for h, s, e in held if h == host)
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # never two at once
    a, b = (min(span for span in held if span[0] == host) for host in ("a@pi1", "b@pi2"))
    assert a[1] < b[2] and b[1] < a[2]  # the two devices were in use at the same time


def test_a_bad_host_is_refused_before_any_work(tmp_path):
    from edgekit.errors import BenchError

    with pytest.raises(BenchError):
        SearchOptions(target="rpi4", out=tmp_path / "s", devices=Devices(hosts=("user@",)))
    assert not (tmp_path / "s").exists()
