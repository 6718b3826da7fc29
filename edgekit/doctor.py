"""``edgekit doctor``: this install against the lock, this CPU's int8 features, the tests' tools.

Why: an artifact's bytes and numbers depend on the converter and runtime versions and on the CPU
that ran it (hostinfo's docstring). The lock, ``constraints.txt``, holds the exact versions the
tests ran with (``scripts/lock.sh``); doctor names every package whose installed version is not
the locked one, so "works on CI, fails here" starts from facts.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import LockError
from edgekit.paths import data_file
from edgekit.verify import hostinfo

LOCK_NAME = "constraints.txt"

#: system tools the tests run -> the Debian package that has it; scripts/setup-system.sh
#: installs the same set (tests/test_doctor.py checks they agree)
TEST_TOOLS = {
    "sshd": "openssh-server",  # tests/device/test_bench.py: a real sshd on loopback
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "debootstrap": "debootstrap",  # tests/device/test_emulate.py: the arm64 userland, built once
    "wget": "wget",  # debootstrap downloads with it
    "time": "time",  # GNU /usr/bin/time -v: the runner's peak RSS cross-check
    "qemu-x86_64": "qemu-user",  # -cpu Haswell: the AVX2-only CPU class (no VNNI)
    "chromium": "chromium",  # tests/search/test_report_browser.py: report.html in a real headless browser
}
# sshd and debootstrap live in sbin, which a non-root user's PATH often lacks
_SBIN = ("/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Path of a system tool on PATH or in the sbin folders, else None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _canonical(name: str) -> str:
    """PEP 503 name: ``tensorflow_cpu`` and ``TensorFlow-CPU`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path() -> Path:
    """The lock of this checkout (repository root) or of the installed wheel (share/edgekit)."""
    try:
        return data_file(LOCK_NAME)
    except FileNotFoundError as exc:
        raise LockError(str(exc), "pass --lock PATH to a constraints.txt") from None


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) for every ``NAME==VERSION`` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"cannot read the lock {path}: {exc}", "pass --lock PATH to a constraints.txt") from None
    pins: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = (part.strip() for part in line.partition("=="))
        if not sep or not name or not version or " " in name:
            raise LockError(f"{path}:{number} is not NAME==VERSION: {raw.strip()!r}", "regenerate it with scripts/lock.sh")
        pins[_canonical(name)] = (name, version)
    if not pins:
        raise LockError(f"the lock {path} pins no package", "regenerate it with scripts/lock.sh")
    return pins


def installed_versions() -> dict[str, str]:
    """canonical name -> version of every distribution this interpreter sees (first on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_canonical(name), dist.version)
    return found


def lock_differences(pins: dict[str, tuple[str, str]], installed: dict[str, str]) -> list[dict[str, str | None]]:
    """One entry per locked package that is missing or has another version, sorted by name."""
    return [{"package": name, "lock": version, "installed": installed.get(key)}
            for key, (name, version) in sorted(pins.items()) if installed.get(key) != version]


def int8_note(arch: str, isa: str, vnni: bool) -> str:
    """What this CPU means for int8 figures measured on it (GUIDE.md section 2), one sentence."""
    if arch == "aarch64":
        return f"ARM int8 kernels ({isa}): no int16 saturation, the arithmetic an ARM target runs"
    if arch != "x86_64":
        return "int8 kernels of this architecture were not measured"
    if vnni:
        return "VNNI: ONNX Runtime's int8 GEMMs accumulate in int32, without the AVX2-only path's int16 saturation"
    return ("no VNNI: ONNX Runtime's u8s8 int8 kernels (AVX2 VPMADDUBSW) saturate in int16 here, so int8 figures "
            "from this host's kernels can be worse than the artifacts' QDQ semantics and an ARM device")


def cpu_report() -> dict[str, Any]:
    try:  # CPU features are read through numpy (CPUID); a bare venv still gets the rest
        arch, isa, vnni = hostinfo.arch(), hostinfo.int8_isa(), hostinfo.has_any(hostinfo.VNNI_FEATURES)
    except ImportError as exc:
        return {"model": None, "arch": None, "int8_isa": None, "vnni": None,
                "note": f"CPU features unknown: {exc} (install the locked stack)"}
    return {"model": hostinfo.cpu_model(), "arch": arch, "int8_isa": isa, "vnni": vnni, "note": int8_note(arch, isa, vnni)}


def diagnose(lock: Path | None = None) -> dict[str, Any]:
    """Everything ``edgekit doctor`` reports; ``matches_lock`` decides its exit code."""
    path = Path(lock) if lock is not None else lock_path()
    pins = read_lock(path)
    differs = lock_differences(pins, installed_versions())
    tools = {name: {"package": package, "path": find_tool(name)} for name, package in TEST_TOOLS.items()}
    return {"edgekit": __version__, "python": platform.python_version(), "prefix": sys.prefix,
            "lock": {"path": str(path), "packages": len(pins), "differs": differs}, "matches_lock": not differs,
            "cpu": cpu_report(), "tools": tools}


def _differs_lines(lock: dict[str, Any]) -> list[str]:
    if not lock["differs"]:
        return [f"lock: {lock['path']}: all {lock['packages']} packages match"]
    lines = [f"lock: {lock['path']}: {len(lock['differs'])} of {lock['packages']} packages differ"]
    for d in lock["differs"]:
        lines.append(f"  {d['package']}: {d['installed'] or 'not installed'} (lock {d['lock']})")
    lines.append(f"  fix: pip install -c {lock['path']} -e '.[test,lint,transformers]' (README command 1)")
    return lines


def render(report: dict[str, Any]) -> str:
    """The human-readable report: install, lock, CPU, tools; one fact per line."""
    cpu, tools = report["cpu"], report["tools"]
    present = [name for name, t in tools.items() if t["path"]]
    missing = [f"{name} ({t['package']})" for name, t in tools.items() if not t["path"]]
    lines = [f"edgekit {report['edgekit']}, Python {report['python']}, {report['prefix']}", *_differs_lines(report["lock"]),
             f"cpu: {cpu['model']} ({cpu['arch']}), int8 ISA {cpu['int8_isa']}; {cpu['note']}",
             f"test tools present: {', '.join(present) or 'none'}"]
    if missing:
        lines.append(f"test tools missing: {', '.join(missing)}; their tests skip (fail under CI=true): "
                     "sudo scripts/setup-system.sh")
    return "\n".join(lines)


def version_text() -> str:
    """``edgekit --version``: edgekit, Python and the stack that decides an artifact's numbers."""
    lines = [f"edgekit {__version__}", f"python {platform.python_version()}"]
    lines += [f"{name} {version or 'not installed'}" for name, version in hostinfo.package_versions().items()]
    return "\n".join(lines)
