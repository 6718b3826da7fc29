"""Low-level tool helpers for :mod:`edgekit.emulate`: run and check for the host's tools.

Running an external tool quietly (its last lines become the error), checking the host has the
tools ``prepare`` needs, a private apt configuration that only downloads (the host's apt state is
untouched), unpacking a .deb without ``dpkg -x``'s merged-/usr breakage, and picking a Debian mirror.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import EmulationError

QEMU_SUITE, QEMU_PACKAGE = "trixie", "qemu-user"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOL_PACKAGES = {"debootstrap": "debootstrap", "wget": "wget", "dpkg-deb": "dpkg", "apt-get": "apt", "tar": "tar"}


# ----------------------------------------------------------------------------- host and tools
def check_host() -> None:
    if not sys.platform.startswith("linux"):
        raise EmulationError("qemu user-mode emulation needs a Linux host", "run edgekit bench --emulate on Linux (or in a Linux VM)")


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = " ".join(sorted({TOOL_PACKAGES.get(t, t) for t in missing}))
        raise EmulationError(f"{', '.join(missing)} not found (needed once to prepare the emulated userland)",
                             f"apt-get install {packages}")


def run_checked(argv: Sequence[Any], what: str, hint: str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float | None = 3600) -> str:
    """Run a tool quietly; on failure raise EmulationError with the last lines of its output."""
    try:
        proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except FileNotFoundError:
        raise EmulationError(f"{what}: {argv[0]} not found", hint) from None
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{what}: no result after {timeout:.0f} s", hint) from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])[-500:]
        raise EmulationError(f"{what} failed (exit {proc.returncode}): {tail}", hint)
    return proc.stdout


# ----------------------------------------------------------------------------- Debian packages
def extract_deb(deb: Path, dest: Path, *members: str) -> None:
    """Unpack a deb's files into ``dest`` like ``dpkg -x``, but keeping directory symlinks:
    bookworm is merged-/usr (/lib -> usr/lib) while some packages still ship files in /lib,
    and plain ``dpkg -x`` replaces the symlink by a directory, after which the guest's
    dynamic loader (/lib/ld-linux-aarch64.so.1) is no longer found."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as deb_proc:
        tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(dest), *members], stdin=deb_proc.stdout,
                             capture_output=True, text=True)
        deb_proc.stdout.close()  # type: ignore[union-attr]  # tar has read it all
        deb_err = deb_proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    if deb_proc.returncode or tar.returncode:
        raise EmulationError(f"unpacking {deb.name} failed: {(deb_err + tar.stderr).strip()[-300:]}", "delete the cache folder and retry")


def private_apt(work: Path, mirror: str) -> list[str]:
    """apt-get argv whose sources, lists, status and archives all live in ``work``: trixie is
    only read from, never added to the host's sources or installed system-wide."""
    for sub in ("lists/partial", "archives/partial", "parts"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() or "amd64"
    sources = work / "sources.list"
    sources.write_text(f"deb [arch={arch}] {mirror} {QEMU_SUITE} main\n")
    (work / "status").touch()
    options = {"Dir::Etc::SourceList": sources, "Dir::Etc::SourceParts": work / "parts", "Dir::Etc::Preferences": work / "none",
               "Dir::Etc::PreferencesParts": work / "parts", "Dir::State::Lists": work / "lists", "Dir::State::status": work / "status",
               "Dir::Cache": work, "Dir::Cache::archives": work / "archives"}
    if os.geteuid() == 0:
        options["APT::Sandbox::User"] = "root"  # the _apt user cannot write into a root-owned cache
    return ["apt-get", "-q", *[arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]]


def debian_mirror() -> str:
    """``$EDGEKIT_DEBIAN_MIRROR``, else the host's own Debian mirror, else deb.debian.org."""
    if os.environ.get("EDGEKIT_DEBIAN_MIRROR"):
        return os.environ["EDGEKIT_DEBIAN_MIRROR"].rstrip("/")
    for uri in _apt_uris(Path("/etc/apt")):
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _apt_uris(etc: Path) -> list[str]:
    """Repository URIs of the host's apt sources, one-line (.list) and deb822 (.sources)."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")), *sorted((etc / "sources.list.d").glob("*.sources"))]
    uris: list[str] = []
    for path in files:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).strip()
                if path.suffix == ".sources" and line.lower().startswith("uris:"):
                    uris += line.split(":", 1)[1].split()
                elif path.suffix == ".list" and line.startswith("deb ") and len(line.split()) > 1:
                    uris.append(line.split()[1])
    return uris
