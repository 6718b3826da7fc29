"""A real sshd on loopback for the tests that run bundles on a "device" over SSH (edgekit bench,
edgekit search --host): throw-away host and client keys, keys only; the device is this machine.

tests/conftest.py imports the ``sshd`` fixture (one server per session, so per test worker); the
sessions it serves get their own ``TMPDIR`` (``Sshd.tmpdir``), so a test can see exactly the
folders its own runs left there.
"""
from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Sshd:
    port: int
    user: str
    identity: Path
    known_hosts: Path  # trusts the server's real key as [127.0.0.1]:PORT and [localhost]:PORT
    folder: Path

    @property
    def tmpdir(self) -> Path:
        """``TMPDIR`` of the sessions (sshd_config ``SetEnv``): where the bench folders go."""
        return self.folder / "tmp"

    def host(self, name: str = "127.0.0.1") -> str:
        return f"{self.user}@{name}:{self.port}"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not listen on {port} within {seconds} s: {log.read_text()}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, require_tool) -> Sshd:
    """A real sshd on 127.0.0.1:<free port>, keys only, trusting one throw-away client key."""
    sshd_path = require_tool("sshd")
    require_tool("ssh")
    require_tool("ssh-keygen")
    folder = tmp_path_factory.mktemp("sshd")
    host_key, client_key = keygen(folder / "host_key"), keygen(folder / "client_key")
    shutil.copyfile(f"{client_key}.pub", folder / "authorized_keys")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {host_key}
        AuthorizedKeysFile {folder / 'authorized_keys'}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin prohibit-password
        PidFile {folder / 'sshd.pid'}
        StrictModes no
        UsePAM no
        UseDNS no
        SetEnv TMPDIR={folder / 'tmp'}
        """))
    (folder / "tmp").mkdir()
    try:  # privilege separation directory: sshd refuses to start without it
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except OSError:
        pass
    log = folder / "sshd.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([sshd_path, "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log)
        key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {key}\n[localhost]:{port} {key}\n")
        yield Sshd(port, getpass.getuser(), client_key, known_hosts, folder)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
