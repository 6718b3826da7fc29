"""Trial latency on real devices: over SSH (``edgekit search --host user@pi ...``, through
``edgekit bench``) or on Ray nodes that are devices (``--ray`` with a cluster whose device nodes
advertise a custom resource named after the profile, e.g. ``rpi4: 1``).

A device runs one trial at a time, so timings do not disturb each other, and several devices
run in parallel: an SSH device is claimed with an exclusive ``flock`` on
``out/devices/<host>.lock`` for the length of its run; a Ray device's one unit of its resource
is what Ray's scheduler hands out. Each figure records the device it came from.
"""
from __future__ import annotations

import contextlib
import fcntl
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.device.settings import RunnerSettings


@dataclass(frozen=True)
class Devices:
    """The devices trials are timed on, and how to reach them (as for ``edgekit bench --host``).

    Attributes:
        hosts: ``user@host[:port]`` of each SSH device.
        ray_resource: time on a Ray node holding one unit of this custom resource instead.
        settings: how the runner measures (its artifact is set per trial).
        identity / known_hosts: the SSH key and the known_hosts file; None: ssh's own.
        python: the device's interpreter.
    """

    hosts: tuple[str, ...] = ()
    ray_resource: str | None = None
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    identity: Path | None = None
    known_hosts: Path | None = None
    python: str = "python3"

    def check(self) -> None:
        """Refuse a malformed host or a missing key before any trial runs."""
        from edgekit.device.ssh import SshOptions, check_ssh_files, parse_host

        if self.ray_resource is not None:
            return
        for host in self.hosts:
            parse_host(host)
        check_ssh_files(SshOptions(identity=self.identity, known_hosts=self.known_hosts))


@contextlib.contextmanager
def claim(folder: Path, hosts: tuple[str, ...], poll_s: float = 0.2) -> Iterator[str]:
    """Wait for a device no other trial is using; yield its host while holding it."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for host in hosts:
            handle = open(folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield host
                return
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        time.sleep(poll_s)


def device_latency(devices: Devices, bundle: Path, artifact: str, out: Path) -> dict:
    """``artifact`` of ``bundle`` run by the bundle's runner on a free device: its p50 in ms, the
    device, and whether the runner's correctness check passed there."""
    if devices.ray_resource is not None:
        return _on_ray_node(devices, bundle, artifact)
    from edgekit.device.bench import bench

    with claim(out / "devices", devices.hosts) as host:
        report = bench(bundle, devices.settings.replace(artifact=artifact), hosts=[host], identity=devices.identity,
                       known_hosts=devices.known_hosts, python=devices.python)[0]
    return _figures(report, host)


def _figures(report: dict, device: str) -> dict:
    result = report["results"][0]
    return {"device": device, "device_latency_ms": result["latency_ms"]["p50"],
            "device_passed": bool(result["correctness"]["passed"])}


def _on_ray_node(devices: Devices, bundle: Path, artifact: str) -> dict:
    """One Ray task holding one unit of the device resource (no CPU of the scheduler's)."""
    import io
    import tarfile

    from edgekit.device.bench import check_bundle
    from edgekit.errors import BenchError
    from edgekit.search import _ray_device
    from edgekit.search.executors import ray_module

    ray = ray_module()
    ray.cloudpickle.register_pickle_by_value(_ray_device)  # the node needs no edgekit
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(check_bundle(bundle), arcname=".")
    settings = devices.settings.replace(artifact=artifact)
    task = ray.remote(num_cpus=0, resources={devices.ray_resource: 1}, max_retries=0)(_ray_device.run_shipped)
    report = ray.get(task.remote(buffer.getvalue(), settings.argv("result.json"), settings.timeout))
    if "error" in report:
        raise BenchError(f"Ray device {devices.ray_resource}: {report['error']}", "check numpy and the runtime on that node")
    return _figures(report, f"ray node {report['node']} (resource {devices.ray_resource})")
