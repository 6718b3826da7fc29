"""SSH side of ``edgekit bench``: run a bundle's device runner on a device (``user@host[:port]``).

Only the OpenSSH client is used, in four connections:

1. probe: the device's python, numpy and tar exist, then ``mktemp -d`` for a private folder;
2. upload: the bundle as a tar stream written by :mod:`tarfile` into ``ssh ... tar -x``;
3. run: ``python3 edgekit_runner.py DIR ... --json DIR/result.json`` (flags from
   :meth:`~edgekit.device.settings.RunnerSettings.argv`), then ``cat`` the JSON;
4. clean-up: ``rm -rf DIR``, always (``finally``), also after a failed or timed-out run.

SSH runs with ``BatchMode=yes`` (keys only: never a password prompt that would hang) and
``StrictHostKeyChecking=yes`` (an unknown or changed host key is refused, never added).
Every failure becomes one :class:`~edgekit.errors.BenchError` naming the host and the fix.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.device.runner_report import RUNNER, annotate, parse_report
from edgekit.device.settings import RunnerSettings
from edgekit.errors import BenchError

# Exit codes of the probe script (chosen away from ssh's 255 and the shell's 126/127).
PROBE_NO_PYTHON, PROBE_NO_NUMPY, PROBE_NO_TAR = 90, 91, 92
PROBE = """\
command -v {py} >/dev/null 2>&1 || exit 90
{py} -c 'import numpy' >/dev/null 2>&1 || exit 91
command -v tar >/dev/null 2>&1 || exit 92
mktemp -d "${{TMPDIR:-/tmp}}/edgekit-bench.XXXXXXXX"
"""
# mktemp output we are willing to `rm -rf`: a guard against ever deleting anything else.
SAFE_REMOTE_DIR = re.compile(r"^/[\w./-]*/edgekit-bench\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Host:
    """``user@name[:port]`` split up; ``label`` is how the user wrote it."""

    user: str | None
    name: str
    port: int | None
    label: str

    @property
    def target(self) -> str:
        return f"{self.user}@{self.name}" if self.user else self.name

    @property
    def known_hosts_name(self) -> str:
        """The key ssh looks up in known_hosts: ``[name]:port`` for a non-default port."""
        return f"[{self.name}]:{self.port}" if self.port and self.port != 22 else self.name


@dataclass(frozen=True)
class SshOptions:
    identity: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: int = 20


def parse_host(spec: str) -> Host:
    """``user@name``, ``user@name:port``, ``name``, ``user@[v6addr]:port``."""
    m = re.fullmatch(r"(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^@:\s\[\]]+))(?::(?P<port>\d{1,5}))?",
                     spec.strip())
    if not m or (m["port"] and not 0 < int(m["port"]) < 65536):
        raise BenchError(f"bad host {spec!r}", "write it as user@name or user@name:port, e.g. pi@raspberrypi.local:22")
    return Host(m["user"], m["v6"] or m["name"], int(m["port"]) if m["port"] else None, spec.strip())


def check_ssh_files(options: SshOptions) -> SshOptions:
    """ssh would silently skip a missing key or treat a missing known_hosts as empty: say so here."""
    if options.identity is not None and not Path(options.identity).is_file():
        raise BenchError(f"identity file {options.identity} does not exist", "pass the path of your private key to --identity")
    if options.known_hosts is not None and not Path(options.known_hosts).is_file():
        raise BenchError(f"known_hosts file {options.known_hosts} does not exist",
                         "create it with ssh-keyscan -p PORT HOST > FILE, or leave --known-hosts out to use ~/.ssh/known_hosts")
    return options


def ssh_command(host: Host, options: SshOptions, remote: str) -> list[str]:
    """The ``ssh`` argv: keys only, host key verified, no tty, one remote shell command."""
    cmd = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
           "-o", f"ConnectTimeout={options.connect_timeout}", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    if options.known_hosts is not None:
        cmd += ["-o", f"UserKnownHostsFile={Path(options.known_hosts).resolve()}"]
    if options.identity is not None:
        # IdentitiesOnly: agent keys tried first could exhaust the server's MaxAuthTries
        cmd += ["-i", str(Path(options.identity).resolve()), "-o", "IdentitiesOnly=yes"]
    if host.port:
        cmd += ["-p", str(host.port)]
    # sh -c: the commands are POSIX sh whatever the login shell is (fish, csh, busybox ash)
    return [*cmd, "--", host.target, "sh -c " + shlex.quote(remote)]


def ssh_error(host: Host, options: SshOptions, stderr: str) -> BenchError | None:
    """Turn the ssh client's own failure (exit 255) into one message with the fix."""
    text = stderr or ""
    where = host.known_hosts_name
    kh = str(options.known_hosts) if options.known_hosts else "~/.ssh/known_hosts"
    keyscan = f"ssh-keyscan {'-p ' + str(host.port) + ' ' if host.port else ''}{host.name} >> {kh}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "HOST KEY HAS CHANGED" in text.upper():
        return BenchError(f"{host.label}: host key for {where} does NOT match the one in {kh} "
                          "(device reinstalled, or someone is intercepting the connection)",
                          f"if the change is expected: ssh-keygen -f {kh} -R '{where}' && {keyscan}")
    if "Host key verification failed" in text or "host key is known" in text:
        return BenchError(f"{host.label}: host key for {where} is not trusted",
                          f"add it to known_hosts ({keyscan}) or pass --known-hosts FILE")
    if "Permission denied" in text or "Too many authentication failures" in text:
        user = host.user or "your user"
        return BenchError(f"{host.label}: key-based login as {user} was refused (password login is never tried)",
                          f"install your public key on the device (ssh-copy-id {'-p ' + str(host.port) + ' ' if host.port else ''}"
                          f"{host.target}) or pass --identity KEY")
    if "Identity file" in text and "not accessible" in text:
        return BenchError(f"{host.label}: identity file {options.identity} is not readable", "pass the private key's path to --identity")
    for marker in ("Could not resolve hostname", "Connection refused", "Connection timed out", "No route to host",
                   "Network is unreachable", "Connection closed", "Connection reset"):
        if marker in text:
            return BenchError(f"{host.label}: cannot connect ({marker.lower()})",
                              f"check the device is on the network and sshd listens on port {host.port or 22}")
    return None


def _ssh(host: Host, options: SshOptions, remote: str, *, timeout: float, input_bytes: bytes | None = None,
         step: str) -> subprocess.CompletedProcess:
    """Run one remote command; an ssh-level failure (255) raises, any other exit code is returned."""
    try:
        proc = subprocess.run(ssh_command(host, options, remote), input=input_bytes, capture_output=True, timeout=timeout,
                              stdin=None if input_bytes is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise BenchError("the OpenSSH client `ssh` is not installed here", "apt-get install openssh-client") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{host.label}: {step} did not finish within {timeout:.0f} s",
                         "raise --timeout, or lower --runs / --max-seconds") from None
    if proc.returncode == 255:
        stderr = proc.stderr.decode(errors="replace")
        error = ssh_error(host, options, stderr)
        if error is None:
            last = (stderr.strip().splitlines() or ["exit code 255"])[-1]
            error = BenchError(f"{host.label}: ssh failed during {step}: {last}", f"try `ssh -p {host.port or 22} {host.target}` by hand")
        raise error
    return proc


def _probe(host: Host, options: SshOptions, python: str) -> str:
    """Check the device has what the runner needs, then make the private remote folder."""
    py = shlex.quote(python)
    proc = _ssh(host, options, PROBE.format(py=py), timeout=120, step="probe")
    install = f"`{python} -m pip install numpy ai-edge-litert onnxruntime`"
    problems = {PROBE_NO_PYTHON: (f"{python} not found on the device",
                                  "install Python 3.9+ there (apt-get install python3 python3-pip), or pass --python PATH"),
                PROBE_NO_NUMPY: (f"numpy is not installed for {python} on the device",
                                 f"run {install} there, or pass --python PATH to a venv's python"),
                PROBE_NO_TAR: ("tar not found on the device", "install it there: apt-get install tar")}
    if proc.returncode in problems:
        problem, hint = problems[proc.returncode]
        raise BenchError(f"{host.label}: {problem}", hint)
    remote_dir = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or not SAFE_REMOTE_DIR.match(remote_dir):
        err = proc.stderr.decode(errors="replace").strip() or remote_dir or f"exit code {proc.returncode}"
        raise BenchError(f"{host.label}: cannot make a temporary folder on the device: {err}",
                         "check that /tmp (or $TMPDIR) is writable there and has free space")
    return remote_dir


def _upload(host: Host, options: SshOptions, bundle: Path, remote_dir: str, timeout: float) -> None:
    """Stream the bundle as tar into ``tar -x`` on the device: no scp, no local tar binary.

    The tar stream is written by a thread so that ``timeout`` also bounds a stalled write."""
    cmd = ssh_command(host, options, f"tar -x -f - -C {shlex.quote(remote_dir)}")
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty far end cannot block us
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        writer = threading.Thread(target=_write_tar, args=(bundle, proc.stdin), daemon=True)
        writer.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{host.label}: copying the bundle did not finish within {timeout:.0f} s",
                             "check the network, or raise --timeout") from None
        finally:
            writer.join(timeout=10)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        error = ssh_error(host, options, stderr) if proc.returncode == 255 else None
        last = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise error or BenchError(f"{host.label}: copying the bundle failed: {last}", "check free space in the device's /tmp")


def _write_tar(bundle: Path, stream) -> None:
    try:
        with tarfile.open(fileobj=stream, mode="w|") as tar:
            for path in sorted(bundle.iterdir()):
                tar.add(path, arcname=path.name)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the far end died or was killed: its exit code and stderr say why
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _run_runner(host: Host, options: SshOptions, python: str, remote_dir: str,
                settings: RunnerSettings) -> tuple[int, str | None, str]:
    """Run the runner; its table goes to stderr so stdout carries only the JSON (one round trip).

    Returns (runner exit code, JSON text or None, stderr)."""
    d = shlex.quote(remote_dir)
    out = shlex.quote(f"{remote_dir}/result.json")
    args = " ".join(shlex.quote(a) for a in settings.argv(f"{remote_dir}/result.json"))
    remote = f"cd {d} && {shlex.quote(python)} {RUNNER} {d} {args} 1>&2; rc=$?; cat {out} 2>/dev/null; exit $rc"
    proc = _ssh(host, options, remote, timeout=settings.timeout, step="the runner")
    stdout = proc.stdout.decode(errors="replace").strip()
    return proc.returncode, stdout or None, proc.stderr.decode(errors="replace")


def _cleanup(host: Host, options: SshOptions, remote_dir: str) -> None:
    """Best effort: the error that brought us here matters more than a failed clean-up."""
    if not SAFE_REMOTE_DIR.match(remote_dir):
        return
    try:
        subprocess.run(ssh_command(host, options, f"rm -rf {shlex.quote(remote_dir)}"), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass


def run_remote(bundle: Path, host: Host, settings: RunnerSettings, *, options: SshOptions, python: str = "python3") -> dict:
    """Probe, upload, run and fetch on one device; the remote folder is removed whatever happens."""
    start = time.perf_counter()
    remote_dir = _probe(host, options, python)
    try:
        _upload(host, options, bundle, remote_dir, settings.timeout)
        code, text, stderr = _run_runner(host, options, python, remote_dir, settings)
    finally:
        _cleanup(host, options, remote_dir)
    report = parse_report(host.label, code, text, stderr)
    return annotate(report, host.label, code, time.perf_counter() - start, remote_dir)
