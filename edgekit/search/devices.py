"""Trial latency on real devices (``edgekit search --host user@pi ...``), through ``edgekit bench``.

A trial's bundle is benchmarked on one device at a time: each device is claimed with an
exclusive ``flock`` on ``out/devices/<host>.lock`` for the length of its run, so with several
workers the devices run in parallel and no device runs two trials at once (their timings would
disturb each other). Each figure records the device it came from.
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
        hosts: ``user@host[:port]`` of each device.
        settings: how the runner measures (its artifact is set per trial).
        identity / known_hosts: the SSH key and the known_hosts file; None: ssh's own.
        python: the device's interpreter.
    """

    hosts: tuple[str, ...]
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    identity: Path | None = None
    known_hosts: Path | None = None
    python: str = "python3"

    def check(self) -> None:
        """Refuse a malformed host or a missing key before any trial runs."""
        from edgekit.device.ssh import SshOptions, check_ssh_files, parse_host

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
    from edgekit.device.bench import bench

    with claim(out / "devices", devices.hosts) as host:
        report = bench(bundle, devices.settings.replace(artifact=artifact), hosts=[host], identity=devices.identity,
                       known_hosts=devices.known_hosts, python=devices.python)[0]
    result = report["results"][0]
    return {"device": host, "device_latency_ms": result["latency_ms"]["p50"],
            "device_passed": bool(result["correctness"]["passed"])}
