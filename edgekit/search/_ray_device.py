"""The Ray task that times a trial's artifact on a device that is a Ray node (a node advertising a
custom resource named after the profile, e.g. ``ray start --resources '{"rpi4": 1}'``).

Stdlib only, and shipped to the node by value (``ray.cloudpickle.register_pickle_by_value``):
the device needs Ray, numpy and one runtime, not edgekit or torch, as with ``edgekit bench``.
The bundle travels as a tar archive in the task's arguments and runs with the node's own
interpreter, in a temporary folder removed afterwards.
"""
from __future__ import annotations

import io
import json
import platform
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def run_shipped(archive: bytes, argv: list[str], timeout: float) -> dict:
    """Unpack ``archive`` (a bundle), run its ``edgekit_runner.py`` with ``argv`` (whose last two
    items are ``--json PATH``, replaced here); the runner's report, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="edgekit-ray-device-") as tmp:
        folder = Path(tmp) / "bundle"
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            try:
                tar.extractall(folder, filter="data")  # refuses links and paths out of the folder
            except TypeError:  # Python before 3.9.17 / 3.10.12 / 3.11.4: no filters (our own archive)
                tar.extractall(folder)
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(folder / "edgekit_runner.py"), str(folder), *argv[:-2], "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        node = f"{socket.gethostname()} ({platform.machine()})"
        if not out.is_file():
            return {"error": f"the runner on {node} exited {proc.returncode}: {proc.stderr.strip()[-300:]}", "node": node}
        return {**json.loads(out.read_text()), "node": node, "exit_code": proc.returncode}
