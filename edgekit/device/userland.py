"""The emulated arm64 userland that :func:`edgekit.device.emulate.prepare` builds and caches.

What is emulated (architectures, runtime flavours, the Debian suite), the cached steps (qemu,
rootfs, each flavour's wheels and its smoke import), how the guest python is started under qemu,
and the host tools those steps need: running a tool quietly (its last lines become the error),
a private apt configuration that only downloads (the host's apt state is untouched), unpacking a
.deb without ``dpkg -x``'s merged-/usr breakage, and picking a Debian mirror.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EmulationError

Progress = Callable[[str], None]
QEMU_SUITE, QEMU_PACKAGE = "trixie", "qemu-user"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOL_PACKAGES = {"debootstrap": "debootstrap", "wget": "wget", "dpkg-deb": "dpkg", "apt-get": "apt", "tar": "tar"}


@dataclass(frozen=True)
class Flavour:
    """One runtime set-up for the guest: what pip fetches, what must import, what it runs."""

    requirements: tuple[str, ...]
    module: str
    formats: frozenset[str]


# Pinned to the versions measured under qemu 10 here; ai-edge-litert and onnxruntime match the
# host's (setup.cfg), so emulated and host verification differ only by the ISA.
FLAVOURS: dict[str, Flavour] = {
    "litert": Flavour(("numpy==2.4.6", "ai-edge-litert==2.3.0"), "ai_edge_litert.interpreter", frozenset({"tflite"})),
    # Raspberry Pi OS bookworm's case: tflite-runtime's last release, built against numpy 1.
    "tflite-runtime": Flavour(("numpy==1.26.4", "tflite-runtime==2.14.0"), "tflite_runtime.interpreter", frozenset({"tflite"})),
    "onnxruntime": Flavour(("numpy==2.4.6", "onnxruntime==1.32.0"), "onnxruntime", frozenset({"onnx", "ort"})),
}


@dataclass(frozen=True)
class _Arch:
    debian: str  # dpkg architecture of the rootfs
    qemu: str  # emulator binary in the qemu-user package
    cpu: str  # QEMU_CPU: the target device's core


ARCHES = {"aarch64": _Arch("arm64", "qemu-aarch64", "cortex-a72")}  # cortex-a72: Raspberry Pi 4
ALIASES = {"arm64": "aarch64"}
SUITE = "bookworm"
GUEST_PYTHON = "usr/bin/python3.11"
SITE_ROOT = "/opt/edgekit"  # guest path of the per-flavour wheel folders
# bookworm has glibc 2.36: any manylinux tag up to it runs there (tflite-runtime 2.14 is 2_34).
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
PASS_ENV = ("TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS")


# ----------------------------------------------------------------------------- prepare: steps
def cached_step(cache: Path, name: str, key: dict[str, Any], say: Progress, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``build`` unless a marker with the same ``key`` says it finished; return its info.

    The marker is written last, so a step that was interrupted runs again from its start."""
    done = cached_info(cache, name, key)
    if done is not None:
        return done
    marker = cache / "steps" / f"{name}.json"
    say(f"{name}: preparing")
    start = time.monotonic()
    info = build()
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "info": info}, indent=1))
    tmp.replace(marker)
    say(f"{name}: done in {time.monotonic() - start:.0f} s")
    return info


def cached_info(cache: Path, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The info of step ``name`` if its marker says it finished with this ``key``, else None."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        done = json.loads((cache / "steps" / f"{name}.json").read_text())
        if done.get("key") == key:
            return done["info"]
    return None


def qemu_key(spec: _Arch) -> dict[str, Any]:
    return {"suite": QEMU_SUITE, "binary": spec.qemu}


def rootfs_key(spec: _Arch) -> dict[str, Any]:
    return {"suite": SUITE, "arch": spec.debian}


def _site_key(flavour: str, rootfs: dict) -> dict[str, Any]:
    # chains on the rootfs build: the wheels live inside it
    return {"requirements": list(FLAVOURS[flavour].requirements), "platforms": list(PLATFORMS), "rootfs": rootfs["built"]}


def _check_key(site: dict, qemu: dict) -> dict[str, Any]:
    # chains on the wheels and on the qemu version the smoke import ran under
    return {"site": site["wheels"], "qemu": qemu["version"]}


def prepare_flavour(cache: Path, spec: _Arch, flavour: str, qemu: dict, rootfs: dict, say: Progress) -> dict[str, Any]:
    """Wheels, then a smoke import under qemu."""
    site = cached_step(cache, f"site-{flavour}", _site_key(flavour, rootfs), say, lambda: _install_site(cache, flavour, say))
    return cached_step(cache, f"check-{flavour}", _check_key(site, qemu), say, lambda: _smoke_check(cache, spec, flavour))


def cached_flavour(cache: Path, flavour: str, qemu: dict, rootfs: dict) -> dict[str, Any] | None:
    """What :func:`prepare_flavour` would return if both its steps are cached, else None
    (nothing is downloaded or run)."""
    site = cached_info(cache, f"site-{flavour}", _site_key(flavour, rootfs))
    return cached_info(cache, f"check-{flavour}", _check_key(site, qemu)) if site is not None else None


def fetch_qemu(cache: Path, spec: _Arch, say: Progress) -> dict[str, Any]:
    """Download trixie's qemu-user deb through a private apt configuration (host apt state is
    untouched) and keep only the one static emulator binary (16 MB of the 465 MB package)."""
    need_tools("apt-get", "dpkg-deb", "tar")
    work = _fresh(cache / "work" / "qemu")
    mirror = debian_mirror()
    say(f"qemu: {QEMU_PACKAGE} from {mirror} {QEMU_SUITE} (~70 MB download)")
    apt = private_apt(work, mirror)
    hint = f"check that {mirror} is reachable, or set EDGEKIT_DEBIAN_MIRROR to a Debian mirror"
    run_checked([*apt, "update"], f"apt-get update ({QEMU_SUITE} package lists)", hint)
    run_checked([*apt, "download", QEMU_PACKAGE], f"apt-get download {QEMU_PACKAGE}", hint, cwd=work)
    debs = sorted(work.glob(f"{QEMU_PACKAGE}_*.deb"))
    if not debs:
        raise EmulationError(f"apt-get download {QEMU_PACKAGE} left no .deb in {work}", hint)
    unpacked = _fresh(work / "unpacked")
    extract_deb(debs[0], unpacked, f"./usr/bin/{spec.qemu}")
    target = cache / "qemu" / spec.qemu
    target.parent.mkdir(parents=True, exist_ok=True)
    (unpacked / "usr" / "bin" / spec.qemu).replace(target)
    return {"version": _qemu_version(target), "deb": debs[0].name}


def build_rootfs(cache: Path, spec: _Arch, say: Progress) -> dict[str, Any]:
    """debootstrap's first stage into a scratch folder, unpack the base (python3) packages,
    then move it into place: a half-built rootfs never looks finished."""
    need_tools("debootstrap", "wget", "dpkg-deb", "tar")
    if os.geteuid() != 0:
        raise EmulationError("building the emulated rootfs needs root (debootstrap creates root-owned files and device nodes)",
                             "run the first `edgekit bench --emulate` (or edgekit.device.emulate.prepare()) as root; "
                             "later runs reuse the cache without root")
    partial, final = _fresh(cache / "rootfs.partial"), cache / "rootfs"
    shutil.rmtree(final, ignore_errors=True)
    mirror = debian_mirror()
    say(f"rootfs: debootstrap --foreign {SUITE} {spec.debian} with python3 from {mirror} (~40 MB download)")
    run_checked(["debootstrap", "--foreign", f"--arch={spec.debian}", "--variant=minbase", "--include=python3", SUITE, partial, mirror],
         "debootstrap", f"see {partial}/debootstrap/debootstrap.log; check that {mirror} is reachable")
    _unpack_base(partial)
    if not (partial / GUEST_PYTHON).is_file() or not (partial / "lib").is_symlink():
        raise EmulationError(f"the rootfs in {partial} has no {GUEST_PYTHON} or lost its /lib symlink", "delete the cache and retry")
    partial.replace(final)
    return {"built": time.time(), "mirror": mirror}


def _unpack_base(root: Path) -> None:
    """The first stage unpacks only the required set; python3 and its libraries are in the
    "base" list, downloaded to var/cache/apt/archives. Unpack them, then drop the debs."""
    meta = root / "debootstrap"
    base = (meta / "base").read_text().split()
    debpaths = dict(line.split(maxsplit=1) for line in (meta / "debpaths").read_text().splitlines() if line.strip())
    for package in base:
        extract_deb(root / debpaths[package].strip().lstrip("/"), root)
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


def _install_site(cache: Path, flavour: str, say: Progress) -> dict[str, Any]:
    """pip-download the flavour's aarch64 cp311 wheels (with dependencies) and unzip them into
    one folder inside the rootfs: unpacking is all a wheel install does that matters here."""
    work = _fresh(cache / "work" / f"wheels-{flavour}")
    reqs = FLAVOURS[flavour].requirements
    say(f"site-{flavour}: pip download {' '.join(reqs)} for cp311 aarch64")
    platform_args = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    run_checked([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.11",
          "--implementation", "cp", "--abi", "cp311", *platform_args, "--dest", work, *reqs],
         f"pip download {' '.join(reqs)} (aarch64)", "check that PyPI is reachable (pip's index settings apply)")
    wheels = sorted(work.glob("*.whl"))
    site = cache / "rootfs" / SITE_ROOT.lstrip("/") / f"site-{flavour}"
    partial = _fresh(site.with_name(site.name + ".partial"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(partial)
    shutil.rmtree(site, ignore_errors=True)
    partial.replace(site)
    return {"wheels": [w.name for w in wheels]}


def _smoke_check(cache: Path, spec: _Arch, flavour: str) -> dict[str, Any]:
    """Import numpy and the runtime under qemu once, so a broken set-up fails in prepare with
    the emulator's message rather than later as an artifact error."""
    code = (f"import platform, numpy, {FLAVOURS[flavour].module}; "
            "print(platform.machine(), platform.python_version(), numpy.__version__)")
    with tempfile.TemporaryDirectory(prefix="edgekit_emulate_") as home:
        out = run_checked(qemu_argv(cache / "qemu" / spec.qemu, cache / "rootfs", ["-c", code]),
                   f"importing {FLAVOURS[flavour].module} under {spec.qemu}", "delete the cache folder and prepare again",
                   env=guest_environ(spec.cpu, flavour, Path(home)), timeout=600)
    machine, python, numpy_version = (out.split() or ["?"] * 3)[-3:]
    if machine != "aarch64":
        raise EmulationError(f"the emulated python reports machine {machine!r}, not aarch64", "delete the cache folder and prepare again")
    return {"python": python, "numpy": numpy_version}


# ----------------------------------------------------------------------------- prepare: helpers
@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One prepare at a time per cache (two test sessions, or the CLI beside the tests)."""
    import fcntl  # Unix only, like the rest of this module

    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _fresh(path: Path) -> Path:
    """An empty folder at ``path`` (leftovers of an interrupted step are removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _qemu_version(qemu: Path) -> str:
    """'10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)' from ``qemu-aarch64 --version``."""
    out = run_checked([qemu, "--version"], f"{qemu} --version", "delete the cache folder and prepare again", timeout=60)
    first = (out.splitlines() or [""])[0]
    return first.split(" version ", 1)[-1].strip() or first


# ----------------------------------------------------------------------------- guest: the python command and environment
def qemu_argv(qemu: Path, rootfs: Path, argv: Sequence[str]) -> list[str]:
    # -L: the guest's absolute paths resolve in rootfs first, then on the host (bundle, JSON).
    return [str(qemu), "-L", str(rootfs), str(rootfs / GUEST_PYTHON), *argv]


def guest_environ(cpu: str, flavour: str, home: Path) -> dict[str, str]:
    """A clean environment: the host's PYTHONPATH/PYTHONHOME/VIRTUAL_ENV point at x86 code."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": f"{SITE_ROOT}/site-{flavour}", "EDGEKIT_EMULATED": "1", "QEMU_CPU": cpu}
    env.update({key: os.environ[key] for key in PASS_ENV if key in os.environ})
    return env


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
