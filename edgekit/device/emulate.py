"""Run a bundle's device runner in an aarch64 userland on an x86 host (qemu user-mode emulation).

``edgekit bench BUNDLE --emulate aarch64`` (:func:`edgekit.device.bench.bench`) uses this to
show, with no device attached, that the artifacts load and give the right numbers through the
ARM kernels of the real device runtimes (the aarch64 wheels of ai-edge-litert, tflite-runtime
and onnxruntime); ``edgekit build
--verify-on aarch64`` makes that a verdict of the build (:mod:`edgekit.stages.verify_emulated`),
and does so unasked when :func:`prepared` finds the userland already cached. Emulated *timings* mean
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

The steps of :func:`prepare`, what is emulated and the host's tools they need (apt, dpkg-deb,
tar, debootstrap) live in :mod:`edgekit.device.userland`; this module is the API and the runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.device.runner_report import RUNNER
from edgekit.device.settings import EMULATED, RunnerSettings
from edgekit.device.userland import (
    ALIASES,
    ARCHES,
    FLAVOURS,
    GUEST_PYTHON,
    SUITE,
    Progress,
    build_rootfs,
    cached_flavour,
    cached_info,
    cached_step,
    check_host,
    fetch_qemu,
    guest_environ,
    locked,
    prepare_flavour,
    qemu_argv,
    qemu_key,
    rootfs_key,
)
from edgekit.device.userland import Flavour as Flavour  # re-exported: part of this module's API
from edgekit.errors import EmulationError

DEFAULT_FLAVOUR = {"tflite": "litert", "onnx": "onnxruntime", "ort": "onnxruntime"}


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
        return qemu_argv(self.qemu, self.rootfs, argv)

    def environ(self, flavour: str, home: Path) -> dict[str, str]:
        """The guest's environment with ``flavour``'s wheels on PYTHONPATH."""
        return guest_environ(self.cpu, flavour, home)


# ----------------------------------------------------------------------------- public API
def default_cache_dir(arch: str = "aarch64") -> Path:
    """``$EDGEKIT_EMULATE_CACHE`` (used as is), else ``$XDG_CACHE_HOME/edgekit/emulate/<arch>``."""
    if os.environ.get("EDGEKIT_EMULATE_CACHE"):
        return Path(os.environ["EDGEKIT_EMULATE_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekit" / "emulate" / arch_name(arch)


def prepare(arch: str = "aarch64", *, cache_dir: Path | None = None, runtime: str | Sequence[str] = "litert",
            progress: Progress | None = None) -> EmulationEnv:
    """Make (once) and return the emulated userland for ``arch`` with ``runtime``'s wheels.

    ``runtime`` is a flavour name (see :data:`FLAVOURS`), several names, or ``"all"``. Cached
    steps are skipped silently; the others report progress lines. Raises EmulationError saying
    what is missing and how to fix it.
    """
    name = arch_name(arch)
    spec, flavours = ARCHES[name], _flavour_names(runtime)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(name)
    say = progress or _stderr_progress
    check_host()
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache):
        qemu = cached_step(cache, "qemu", qemu_key(spec), say, lambda: fetch_qemu(cache, spec, say))
        rootfs = cached_step(cache, "rootfs", rootfs_key(spec), say, lambda: build_rootfs(cache, spec, say))
        checks = [prepare_flavour(cache, spec, flavour, qemu, rootfs, say) for flavour in flavours]
        shutil.rmtree(cache / "work", ignore_errors=True)  # apt lists, debs, wheels: unpacked now
    return _env(name, cache, qemu, checks[0], flavours)


def prepared(arch: str = "aarch64", *, cache_dir: Path | None = None,
             runtime: str | Sequence[str] = "litert") -> EmulationEnv | None:
    """The userland :func:`prepare` would return if every step it needs is already cached,
    else None. Downloads, builds and runs nothing: a build may call it to decide whether an
    emulated verification costs only the runs themselves."""
    name = arch_name(arch)
    spec, flavours = ARCHES[name], _flavour_names(runtime)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(name)
    if not sys.platform.startswith("linux"):
        return None
    qemu, rootfs = cached_info(cache, "qemu", qemu_key(spec)), cached_info(cache, "rootfs", rootfs_key(spec))
    checks = [cached_flavour(cache, flavour, qemu, rootfs) for flavour in flavours] if qemu and rootfs else [None]
    if any(check is None for check in checks):
        return None
    env = _env(name, cache, qemu, checks[0], flavours)
    return env if env.qemu.is_file() and env.python.exists() else None


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


def run(bundle: Path, settings: RunnerSettings = EMULATED, *, env: EmulationEnv | None = None, runtime: str | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run the bundle's ``edgekit_runner.py`` under qemu, one process per artifact.

    Returns the runner's JSON report merged over artifacts, every result marked
    ``emulated: true``, plus ``exit_code`` (the worst runner exit code) and ``emulation``
    (qemu version, cpu, rootfs, guest python, runtime flavour). ``settings`` are used as
    given (:data:`~edgekit.device.settings.EMULATED` by default: a few timed runs);
    ``settings.artifact`` selects one artifact, ``settings.timeout`` bounds each run.
    """
    bundle = Path(bundle).resolve()
    manifest = _read_manifest(bundle)
    plan = plan_runs(manifest, runtime, settings.artifact)
    env = _ensure(env, {flavour for _, flavour in plan}, progress)
    say = progress or _stderr_progress
    _check_visible(env, bundle)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="edgekit_emulate_") as tmp:
        _check_visible(env, Path(tmp))
        for art, flavour in plan:
            say(f"{art['file']}: running under {env.qemu.name} -cpu {env.cpu} with {flavour} (timings are not meaningful)")
            outcomes.append(_run_artifact(env, bundle, art, flavour, settings.replace(artifact=art["file"]), Path(tmp)))
    return _merge(env, bundle, manifest, plan, outcomes)


# ----------------------------------------------------------------------------- prepare: helpers
def _env(name: str, cache: Path, qemu: dict[str, Any], check: dict[str, Any], flavours: tuple[str, ...]) -> EmulationEnv:
    spec = ARCHES[name]
    return EmulationEnv(arch=name, cache_dir=cache, qemu=cache / "qemu" / spec.qemu, qemu_version=qemu["version"],
                        cpu=spec.cpu, rootfs=cache / "rootfs", python_version=check["python"], flavours=flavours)


def arch_name(arch: str) -> str:
    """The canonical name of an emulated architecture (``arm64`` -> ``aarch64``); EmulationError if unsupported."""
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


# ----------------------------------------------------------------------------- run: helpers
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


def _format(art: dict[str, Any]) -> str:
    return art.get("format") or Path(art.get("file", "")).suffix.lstrip(".")


def _check_visible(env: EmulationEnv, path: Path) -> None:
    """The guest reads a host path only where the rootfs has nothing at that path."""
    shadow = env.rootfs / path.relative_to(path.anchor)
    if shadow.exists():
        raise EmulationError(f"{path} also exists inside the emulated rootfs ({shadow}), so the emulated runner would not see it",
                             "move the bundle (or TMPDIR) to another folder")


def _run_artifact(env: EmulationEnv, bundle: Path, art: dict[str, Any], flavour: str, settings: RunnerSettings,
                  tmp: Path) -> tuple[dict[str, Any] | None, dict[str, Any], int]:
    """One artifact in one qemu process: (runner report or None, result, runner exit code).

    ``settings`` always name the artifact: without ``--artifact`` the runner starts a child
    interpreter per artifact, and with no binfmt_misc handler the guest cannot exec an aarch64 binary (ENOEXEC)."""
    out = tmp / f"{flavour}-{art['file']}.json"
    argv = [str(bundle / RUNNER), str(bundle), *settings.argv(str(out))]
    try:
        proc = subprocess.run(env.command(argv), env=env.environ(flavour, tmp), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=settings.timeout)
    except subprocess.TimeoutExpired:
        return None, _error_result(art, f"{art['file']}: no result after {settings.timeout:.0f} s under emulation"), 1
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
