"""Run a bundle's device runner in an aarch64 userland on an x86 host (qemu user-mode emulation).

``edgekit bench BUNDLE --emulate aarch64`` uses this to show, with no device attached, that the
artifacts load and give the right numbers through the ARM kernels of the real device runtimes
(the aarch64 wheels of ai-edge-litert, tflite-runtime and onnxruntime). Emulated *timings* mean
nothing (the emulator translates every instruction); emulated *outputs* do: int8 kernels give
bit-identical results to x86 for the same runtime version, fp32 differs only in the last bits
(summation order).

:func:`prepare` builds everything once into a cache (``$EDGEKIT_EMULATE_CACHE``, else
``~/.cache/edgekit/emulate/aarch64``); a marker file per finished step lets an interrupted
prepare resume at the step it was in:

- ``qemu/qemu-aarch64``: the static user-mode emulator from Debian trixie's ``qemu-user``
  (qemu 10), fetched with a private apt configuration, so nothing is installed on the host.
  bookworm's own qemu 7.2 crashes while importing ai-edge-litert and onnxruntime.
- ``rootfs/``: a Debian bookworm arm64 userland with Python 3.11 (debootstrap's first stage,
  plus the python3 packages it downloaded but leaves packed). Needs root, once.
- ``rootfs/opt/edgekit/site-<flavour>/``: the unpacked aarch64 wheels of one runtime flavour,
  put on the guest's PYTHONPATH: ``litert``, ``tflite-runtime`` (numpy<2), ``onnxruntime``.

:func:`run` then starts ``qemu-aarch64 -L ROOTFS ROOTFS/usr/bin/python3.11 edgekit_runner.py``
once per artifact. With ``-L`` the guest sees ROOTFS first and falls back to the host filesystem
for absolute paths ROOTFS does not have, which is how it reads the bundle and writes its JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
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
DEFAULT_FLAVOUR = {"tflite": "litert", "onnx": "onnxruntime", "ort": "onnxruntime"}


@dataclass(frozen=True)
class _Arch:
    debian: str  # dpkg architecture of the rootfs
    qemu: str  # emulator binary in the qemu-user package
    cpu: str  # QEMU_CPU: the target device's core


ARCHES = {"aarch64": _Arch("arm64", "qemu-aarch64", "cortex-a72")}  # cortex-a72: Raspberry Pi 4
ALIASES = {"arm64": "aarch64"}
SUITE = "bookworm"
QEMU_SUITE, QEMU_PACKAGE = "trixie", "qemu-user"
GUEST_PYTHON = "usr/bin/python3.11"
SITE_ROOT = "/opt/edgekit"  # guest path of the per-flavour wheel folders
# bookworm has glibc 2.36: any manylinux tag up to it runs there (tflite-runtime 2.14 is 2_34).
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RUNNER = "edgekit_runner.py"
# A few timed runs prove the loop works; more only costs minutes of meaningless emulated timing.
# Caller's runner_args come after these, and argparse keeps the last value.
EMULATED_RUNNER_ARGS = ("--runs", "3", "--warmup", "1", "--min-seconds", "0")
RUN_TIMEOUT_S = 1800.0
PASS_ENV = ("TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS")
TOOL_PACKAGES = {"debootstrap": "debootstrap", "wget": "wget", "dpkg-deb": "dpkg", "apt-get": "apt", "tar": "tar"}


@dataclass(frozen=True)
class EmulationEnv:
    """A prepared emulated userland: where qemu and the rootfs are, and what they are."""

    arch: str
    cache_dir: Path
    qemu: Path
    qemu_version: str
    cpu: str
    rootfs: Path
    python_version: str
    flavours: tuple[str, ...]

    @property
    def python(self) -> Path:
        """Host path of the guest's python3.11 (qemu loads it; its libraries come from -L)."""
        return self.rootfs / GUEST_PYTHON

    def command(self, argv: Sequence[str]) -> list[str]:
        """``python3.11 argv...`` under qemu."""
        return _qemu_argv(self.qemu, self.rootfs, argv)

    def environ(self, flavour: str, home: Path) -> dict[str, str]:
        """The guest's environment with ``flavour``'s wheels on PYTHONPATH."""
        return _guest_environ(self.cpu, flavour, home)


# ----------------------------------------------------------------------------- public API
def default_cache_dir(arch: str = "aarch64") -> Path:
    """``$EDGEKIT_EMULATE_CACHE`` (used as is), else ``$XDG_CACHE_HOME/edgekit/emulate/<arch>``."""
    if os.environ.get("EDGEKIT_EMULATE_CACHE"):
        return Path(os.environ["EDGEKIT_EMULATE_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekit" / "emulate" / _arch_name(arch)


def prepare(arch: str = "aarch64", *, cache_dir: Path | None = None, runtime: str | Sequence[str] = "litert",
            progress: Progress | None = None) -> EmulationEnv:
    """Make (once) and return the emulated userland for ``arch`` with ``runtime``'s wheels.

    ``runtime`` is a flavour name (see :data:`FLAVOURS`), several names, or ``"all"``. Cached
    steps are skipped silently; the others report progress lines. Raises EmulationError saying
    what is missing and how to fix it.
    """
    name = _arch_name(arch)
    spec, flavours = ARCHES[name], _flavour_names(runtime)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(name)
    say = progress or _stderr_progress
    _check_host()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        qemu = _step(cache, "qemu", {"suite": QEMU_SUITE, "binary": spec.qemu}, say, lambda: _fetch_qemu(cache, spec, say))
        rootfs = _step(cache, "rootfs", {"suite": SUITE, "arch": spec.debian}, say, lambda: _build_rootfs(cache, spec, say))
        checks = [_prepare_flavour(cache, spec, flavour, qemu, rootfs, say) for flavour in flavours]
        shutil.rmtree(cache / "work", ignore_errors=True)  # apt lists, debs, wheels: unpacked now
    return EmulationEnv(arch=name, cache_dir=cache, qemu=cache / "qemu" / spec.qemu, qemu_version=qemu["version"],
                        cpu=spec.cpu, rootfs=cache / "rootfs", python_version=checks[0]["python"], flavours=flavours)


def plan_runs(manifest: dict[str, Any], runtime: str | None = None, artifact: str | None = None) -> list[tuple[dict[str, Any], str]]:
    """(artifact entry, flavour) pairs to run: every artifact ``runtime`` can run, or with no
    ``runtime`` each artifact with its default flavour (litert for .tflite, onnxruntime else)."""
    arts = list(manifest.get("artifacts") or [])
    if artifact is not None:
        arts = [a for a in arts if a.get("file") in (artifact, os.path.basename(artifact))]
        if not arts:
            raise EmulationError(f"{artifact} is not an artifact of this bundle", "see manifest.json for the artifact files")
    if runtime is not None and runtime not in FLAVOURS:
        raise EmulationError(f"unknown emulated runtime {runtime!r}", f"use one of {', '.join(FLAVOURS)}")
    plan = [(a, runtime or DEFAULT_FLAVOUR[_format(a)]) for a in arts
            if _format(a) in (FLAVOURS[runtime].formats if runtime else DEFAULT_FLAVOUR)]
    if not plan:
        raise EmulationError(f"no artifact of this bundle can run with {runtime or 'any emulated runtime'}",
                             "pick another runtime: litert/tflite-runtime run .tflite, onnxruntime runs .onnx/.ort")
    return plan


def run(bundle: Path, runner_args: Sequence[str] = (), *, env: EmulationEnv | None = None, runtime: str | None = None,
        progress: Progress | None = None, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """Run the bundle's ``edgekit_runner.py`` under qemu, one process per artifact.

    Returns the runner's JSON report merged over artifacts, every result marked
    ``emulated: true``, plus ``exit_code`` (the worst runner exit code) and ``emulation``
    (qemu version, cpu, rootfs, guest python, runtime flavour). ``--artifact`` in
    ``runner_args`` selects one artifact; ``--json`` is set here.
    """
    bundle = Path(bundle).resolve()
    manifest = _read_manifest(bundle)
    args, only = _split_runner_args(runner_args)
    plan = plan_runs(manifest, runtime, only)
    env = _ensure(env, {flavour for _, flavour in plan}, progress)
    say = progress or _stderr_progress
    _check_visible(env, bundle)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="edgekit_emulate_") as tmp:
        _check_visible(env, Path(tmp))
        for art, flavour in plan:
            say(f"{art['file']}: running under {env.qemu.name} -cpu {env.cpu} with {flavour} (timings are not meaningful)")
            outcomes.append(_run_artifact(env, bundle, art, flavour, args, Path(tmp), timeout))
    return _merge(env, bundle, manifest, plan, outcomes)


# ----------------------------------------------------------------------------- prepare: steps
def _step(cache: Path, name: str, key: dict[str, Any], say: Progress, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``build`` unless a marker with the same ``key`` says it finished; return its info.

    The marker is written last, so a step that was interrupted runs again from its start."""
    marker = cache / "steps" / f"{name}.json"
    with contextlib.suppress(OSError, ValueError):
        done = json.loads(marker.read_text())
        if done.get("key") == key:
            return done["info"]
    say(f"{name}: preparing")
    start = time.monotonic()
    info = build()
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "info": info}, indent=1))
    tmp.replace(marker)
    say(f"{name}: done in {time.monotonic() - start:.0f} s")
    return info


def _prepare_flavour(cache: Path, spec: _Arch, flavour: str, qemu: dict, rootfs: dict, say: Progress) -> dict[str, Any]:
    """Wheels, then a smoke import under qemu. Keys chain on the rootfs build (the wheels live
    inside it) and on the qemu version (the check ran under it)."""
    site_key = {"requirements": list(FLAVOURS[flavour].requirements), "platforms": list(PLATFORMS), "rootfs": rootfs["built"]}
    site = _step(cache, f"site-{flavour}", site_key, say, lambda: _install_site(cache, flavour, say))
    check_key = {"site": site["wheels"], "qemu": qemu["version"]}
    return _step(cache, f"check-{flavour}", check_key, say, lambda: _smoke_check(cache, spec, flavour))


def _fetch_qemu(cache: Path, spec: _Arch, say: Progress) -> dict[str, Any]:
    """Download trixie's qemu-user deb through a private apt configuration (host apt state is
    untouched) and keep only the one static emulator binary (16 MB of the 465 MB package)."""
    _need_tools("apt-get", "dpkg-deb", "tar")
    work = _fresh(cache / "work" / "qemu")
    mirror = _debian_mirror()
    say(f"qemu: {QEMU_PACKAGE} from {mirror} {QEMU_SUITE} (~70 MB download)")
    apt = _private_apt(work, mirror)
    hint = f"check that {mirror} is reachable, or set EDGEKIT_DEBIAN_MIRROR to a Debian mirror"
    _cmd([*apt, "update"], f"apt-get update ({QEMU_SUITE} package lists)", hint)
    _cmd([*apt, "download", QEMU_PACKAGE], f"apt-get download {QEMU_PACKAGE}", hint, cwd=work)
    debs = sorted(work.glob(f"{QEMU_PACKAGE}_*.deb"))
    if not debs:
        raise EmulationError(f"apt-get download {QEMU_PACKAGE} left no .deb in {work}", hint)
    unpacked = _fresh(work / "unpacked")
    _extract_deb(debs[0], unpacked, f"./usr/bin/{spec.qemu}")
    target = cache / "qemu" / spec.qemu
    target.parent.mkdir(parents=True, exist_ok=True)
    (unpacked / "usr" / "bin" / spec.qemu).replace(target)
    return {"version": _qemu_version(target), "deb": debs[0].name}


def _build_rootfs(cache: Path, spec: _Arch, say: Progress) -> dict[str, Any]:
    """debootstrap's first stage into a scratch folder, unpack the base (python3) packages,
    then move it into place: a half-built rootfs never looks finished."""
    _need_tools("debootstrap", "wget", "dpkg-deb", "tar")
    if os.geteuid() != 0:
        raise EmulationError("building the emulated rootfs needs root (debootstrap creates root-owned files and device nodes)",
                             "run the first `edgekit bench --emulate` (or edgekit.emulate.prepare()) as root; "
                             "later runs reuse the cache without root")
    partial, final = _fresh(cache / "rootfs.partial"), cache / "rootfs"
    shutil.rmtree(final, ignore_errors=True)
    mirror = _debian_mirror()
    say(f"rootfs: debootstrap --foreign {SUITE} {spec.debian} with python3 from {mirror} (~40 MB download)")
    _cmd(["debootstrap", "--foreign", f"--arch={spec.debian}", "--variant=minbase", "--include=python3", SUITE, partial, mirror],
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
        _extract_deb(root / debpaths[package].strip().lstrip("/"), root)
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


def _install_site(cache: Path, flavour: str, say: Progress) -> dict[str, Any]:
    """pip-download the flavour's aarch64 cp311 wheels (with dependencies) and unzip them into
    one folder inside the rootfs: unpacking is all a wheel install does that matters here."""
    work = _fresh(cache / "work" / f"wheels-{flavour}")
    reqs = FLAVOURS[flavour].requirements
    say(f"site-{flavour}: pip download {' '.join(reqs)} for cp311 aarch64")
    platform_args = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    _cmd([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.11",
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
        out = _cmd(_qemu_argv(cache / "qemu" / spec.qemu, cache / "rootfs", ["-c", code]),
                   f"importing {FLAVOURS[flavour].module} under {spec.qemu}", "delete the cache folder and prepare again",
                   env=_guest_environ(spec.cpu, flavour, Path(home)), timeout=600)
    machine, python, numpy_version = (out.split() or ["?"] * 3)[-3:]
    if machine != "aarch64":
        raise EmulationError(f"the emulated python reports machine {machine!r}, not aarch64", "delete the cache folder and prepare again")
    return {"python": python, "numpy": numpy_version}


# ----------------------------------------------------------------------------- prepare: helpers
def _arch_name(arch: str) -> str:
    name = ALIASES.get(arch, arch)
    if name not in ARCHES:
        raise EmulationError(f"cannot emulate {arch!r}", f"supported: {', '.join(ARCHES)}")
    return name


def _flavour_names(runtime: str | Sequence[str]) -> tuple[str, ...]:
    names = tuple(FLAVOURS) if runtime == "all" else (runtime,) if isinstance(runtime, str) else tuple(runtime)
    unknown = [n for n in names if n not in FLAVOURS]
    if unknown or not names:
        raise EmulationError(f"unknown emulated runtime {', '.join(unknown) or '(none)'}", f"use one of {', '.join(FLAVOURS)} or 'all'")
    return names


def _check_host() -> None:
    if not sys.platform.startswith("linux"):
        raise EmulationError("qemu user-mode emulation needs a Linux host", "run edgekit bench --emulate on Linux (or in a Linux VM)")


def _need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = " ".join(sorted({TOOL_PACKAGES.get(t, t) for t in missing}))
        raise EmulationError(f"{', '.join(missing)} not found (needed once to prepare the emulated userland)",
                             f"apt-get install {packages}")


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
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


def _cmd(argv: Sequence[Any], what: str, hint: str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
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


def _extract_deb(deb: Path, dest: Path, *members: str) -> None:
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


def _private_apt(work: Path, mirror: str) -> list[str]:
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


def _debian_mirror() -> str:
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


def _qemu_version(qemu: Path) -> str:
    """'10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)' from ``qemu-aarch64 --version``."""
    out = _cmd([qemu, "--version"], f"{qemu} --version", "delete the cache folder and prepare again", timeout=60)
    first = (out.splitlines() or [""])[0]
    return first.split(" version ", 1)[-1].strip() or first


# ----------------------------------------------------------------------------- run: helpers
def _qemu_argv(qemu: Path, rootfs: Path, argv: Sequence[str]) -> list[str]:
    # -L: the guest's absolute paths resolve in rootfs first, then on the host (bundle, JSON).
    return [str(qemu), "-L", str(rootfs), str(rootfs / GUEST_PYTHON), *argv]


def _guest_environ(cpu: str, flavour: str, home: Path) -> dict[str, str]:
    """A clean environment: the host's PYTHONPATH/PYTHONHOME/VIRTUAL_ENV point at x86 code."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": f"{SITE_ROOT}/site-{flavour}", "EDGEKIT_EMULATED": "1", "QEMU_CPU": cpu}
    env.update({key: os.environ[key] for key in PASS_ENV if key in os.environ})
    return env


def _ensure(env: EmulationEnv | None, flavours: set[str], progress: Progress | None) -> EmulationEnv:
    """``env`` if it already has every flavour, else prepare (cached steps cost nothing)."""
    if env is not None and flavours <= set(env.flavours):
        return env
    have = set(env.flavours) if env is not None else set()
    return prepare(env.arch if env else "aarch64", cache_dir=env.cache_dir if env else None,
                   runtime=sorted(flavours | have), progress=progress)


def _read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmulationError(f"cannot read {bundle / 'manifest.json'}: {exc}", "pass a bundle folder written by edgekit build") from None
    if not (bundle / RUNNER).is_file():
        raise EmulationError(f"{bundle} has no {RUNNER}", "rebuild the bundle with edgekit build")
    return manifest


def _split_runner_args(runner_args: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``--artifact`` (decides the plan) and ``--json`` (set per run) out of the args."""
    args, artifact, items = [], None, list(runner_args)
    while items:
        item = items.pop(0)
        flag, eq, value = item.partition("=")
        if flag in ("--artifact", "--json"):
            value = value if eq else (items.pop(0) if items else "")
            artifact = value if flag == "--artifact" else artifact
            continue
        args.append(item)
    return args, artifact


def _format(art: dict[str, Any]) -> str:
    return art.get("format") or Path(art.get("file", "")).suffix.lstrip(".")


def _check_visible(env: EmulationEnv, path: Path) -> None:
    """The guest reads a host path only where the rootfs has nothing at that path."""
    shadow = env.rootfs / path.relative_to(path.anchor)
    if shadow.exists():
        raise EmulationError(f"{path} also exists inside the emulated rootfs ({shadow}), so the emulated runner would not see it",
                             "move the bundle (or TMPDIR) to another folder")


def _run_artifact(env: EmulationEnv, bundle: Path, art: dict[str, Any], flavour: str, args: list[str], tmp: Path,
                  timeout: float) -> tuple[dict[str, Any] | None, dict[str, Any], int]:
    """One artifact in one qemu process: (runner report or None, result, runner exit code).

    Always with ``--artifact``: without it the runner starts a child interpreter per artifact,
    and with no binfmt_misc handler the guest cannot exec an aarch64 binary (ENOEXEC)."""
    out = tmp / f"{flavour}-{art['file']}.json"
    argv = [str(bundle / RUNNER), str(bundle), *EMULATED_RUNNER_ARGS, *args, "--artifact", art["file"], "--json", str(out)]
    try:
        proc = subprocess.run(env.command(argv), env=env.environ(flavour, tmp), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, _error_result(art, f"{art['file']}: no result after {timeout:.0f} s under emulation"), 1
    if out.is_file():
        report = json.loads(out.read_text(encoding="utf-8"))
        result = report["results"][0]
        result["emulated"] = True
        return report, result, proc.returncode
    return None, _error_result(art, _crash_message(art, proc)), proc.returncode if proc.returncode > 0 else 1


def _crash_message(art: dict[str, Any], proc: subprocess.CompletedProcess) -> str:
    """The runner's own one-line error if it printed one, else qemu's or the last stderr line."""
    lines = proc.stderr.strip().splitlines()
    own = [ln for ln in lines if ln.startswith("edgekit-runner:")]
    last = (own or [ln for ln in lines if ln.startswith("qemu")] or lines or ["no output"])[-1].strip()
    how = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return f"{art['file']}: emulated runner failed ({how}): {last[-300:]}"


def _error_result(art: dict[str, Any], message: str) -> dict[str, Any]:
    """A result in the runner's own shape (same keys as its failures), so tables render it."""
    from edgekit.runner.edgekit_runner import empty_result

    return dict(empty_result(art, message), emulated=True)


def _merge(env: EmulationEnv, bundle: Path, manifest: dict[str, Any], plan: list[tuple[dict[str, Any], str]],
           outcomes: list[tuple[dict[str, Any] | None, dict[str, Any], int]]) -> dict[str, Any]:
    """One report like the runner's whole-bundle JSON, plus what was emulated and how."""
    reports = [report for report, _, _ in outcomes if report]
    first = reports[0] if reports else {}
    flavours = {art["file"]: flavour for art, flavour in plan}
    device = first.get("device")
    return {
        "runner_version": first.get("runner_version"), "bundle": str(bundle), "target": manifest.get("target"),
        "device": device, "results": [result for _, result, _ in outcomes],
        "exit_code": max((code for _, _, code in outcomes), default=0),
        "emulation": {"arch": env.arch, "qemu": env.qemu_version, "cpu": env.cpu, "rootfs": f"debian {SUITE} {ARCHES[env.arch].debian}",
                      "python": (device or {}).get("python") or env.python_version,
                      "runtime_flavour": "+".join(dict.fromkeys(flavours.values())), "runtime_flavours": flavours},
    }


def _stderr_progress(message: str) -> None:
    print(f"edgekit emulate: {message}", file=sys.stderr, flush=True)
