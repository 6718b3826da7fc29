"""Emulated verification: every artifact run by the device runtimes' ARM kernels under qemu.

Why: :class:`~edgekit.stages.verify.Verify` runs the artifacts with the build host's kernels,
which for an ARM target are not the device's. On an x86 host without VNNI, ONNX Runtime's int8
GEMM multiplies in int16 with saturation and judged the digits rpi4 ORT artifact at 0.606 max
abs err where ARM gives 0.345 (GUIDE.md section 2). Here the bundle's own runner runs inside
the emulated Debian arm64 userland of :mod:`edgekit.device.emulate`, replays golden.npz and applies the
manifest's tolerances, as the device would. Each artifact's manifest entry gets
``verdicts["arm_emulated"]``; a failing one fails the build like Verify does.

When: ``--verify-on aarch64`` (the userland is prepared, if need be, before any conversion, by
:class:`PrepareEmulation`); without the option, for an aarch64 target whose userland is
already cached (never built implicitly: that downloads from Debian mirrors and PyPI);
``--verify-on none`` never.
"""
from __future__ import annotations

import json
import re
from typing import Any

from edgekit.context import BuildContext
from edgekit.device.settings import RunnerSettings
from edgekit.errors import UnsupportedError, VerificationError
from edgekit.stages.base import Stage
from edgekit.verify.rule import broken_bounds

VERDICT = "arm_emulated"
SEMANTICS = "arm-kernels"
# Correctness is the point and emulated timings mean nothing: one timed run, no warm-up.
RUNNER_SETTINGS = RunnerSettings(runs=1, warmup=0, min_seconds=0.0)
# What runs inside the emulated Linux userland; a device-only delegate or provider (NNAPI, GPU)
# is replaced by the runtime's ARM CPU kernels, and the verdict says so.
EMULATED_DELEGATES = ("xnnpack", "none")
EMULATED_PROVIDER = "CPUExecutionProvider"


def device_arch(ctx: BuildContext) -> str | None:
    """The target device's architecture: the profile's ``device.arch`` when it has one, else
    from the ISA (``armv8.0-a`` and later are aarch64 here); None when neither says."""
    from edgekit.device.emulate import ALIASES

    arch = getattr(ctx.profile.device, "arch", None)
    if arch:
        return ALIASES.get(arch, arch)
    match = re.match(r"armv(\d+)", ctx.profile.device.isa.lower())
    return "aarch64" if match and int(match.group(1)) >= 8 else None


def emulation_arch(ctx: BuildContext, flavours: list[str]) -> str | None:
    """The architecture to verify on, or None. An explicit ``verify_on`` that is not the
    target's architecture is refused (UnsupportedError); automatic mode needs ``flavours``
    already cached."""
    from edgekit.device.emulate import ARCHES, arch_name, prepared

    wanted, target = ctx.options.verify_on, device_arch(ctx)
    if wanted == "none":
        return None
    if wanted is None:
        return target if target in ARCHES and prepared(target, runtime=flavours) is not None else None
    name = arch_name(wanted)
    if name != target:
        raise UnsupportedError(f"--verify-on {wanted}: target {ctx.profile.name} is {target or ctx.profile.device.isa}, not {name}",
                               f"drop --verify-on, or build for an {name} target: see `edgekit targets`")
    return name


def profile_flavours(ctx: BuildContext) -> list[str]:
    """The emulated runtimes the profile's artifacts will need (before they exist)."""
    from edgekit.device.emulate import DEFAULT_FLAVOUR

    formats = (["tflite"] if ctx.profile.tflite.enabled else []) + (["onnx"] if ctx.profile.ort.enabled else [])
    return sorted({DEFAULT_FLAVOUR[f] for f in formats})


def artifact_flavours(ctx: BuildContext) -> list[str]:
    from edgekit.device.emulate import DEFAULT_FLAVOUR

    return sorted({DEFAULT_FLAVOUR[a.format] for a in ctx.artifacts})


class PrepareEmulation(Stage):
    """For ``--verify-on``: refuse a wrong architecture and prepare the userland, before any work."""

    name = "prepare_emulation"
    description = "preparing the emulated userland for --verify-on"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.verify_on not in (None, "none")

    def run(self, ctx: BuildContext) -> None:
        from edgekit.device.emulate import prepare

        flavours = profile_flavours(ctx)
        arch = emulation_arch(ctx, flavours)
        if arch is not None and flavours:
            prepare(arch, runtime=flavours, progress=ctx.reporter.info)


class VerifyEmulated(Stage):
    """Run the written bundle's runner under qemu on golden.npz; record and judge the verdicts."""

    name = "verify_emulated"
    description = "verifying artifacts with the device's ARM kernels (emulated aarch64)"

    def applies(self, ctx: BuildContext) -> bool:
        return bool(ctx.artifacts) and emulation_arch(ctx, artifact_flavours(ctx)) is not None

    def run(self, ctx: BuildContext) -> None:
        from edgekit.device.emulate import prepare, run

        arch = emulation_arch(ctx, artifact_flavours(ctx))
        if ctx.options.verify_on is None:
            ctx.reporter.info(f"automatic: the emulated {arch} userland is cached (--verify-on none skips this)")
        env = prepare(arch, runtime=artifact_flavours(ctx), progress=ctx.reporter.info)  # cached: silent
        settings, notes = _runner_settings(ctx)
        report = run(ctx.bundle_dir, settings, env=env, progress=ctx.reporter.info)
        results = {r["file"]: r for r in report["results"]}
        samples = self.samples(ctx)
        verdicts = {a.file: _verdict(results[a.file], report, samples, notes.get(a.format)) for a in ctx.artifacts}
        _record(ctx, verdicts)
        problems = [problem for a in ctx.artifacts if (problem := _judge(ctx, a.file, results[a.file], verdicts[a.file]))]
        _fail_or_allow(ctx, report, problems)

    def samples(self, ctx: BuildContext) -> int:
        """How many golden samples the runner judged each artifact on."""
        return len(next(iter(ctx.reference.values())))


def _runner_settings(ctx: BuildContext) -> tuple[RunnerSettings, dict[str, str]]:
    """Runner settings that replace a delegate or provider the emulated userland cannot have,
    and per format the note saying so."""
    profile, settings, notes = ctx.profile, RUNNER_SETTINGS, {}  # the profile is where the manifest's runtime_defaults come from
    if profile.tflite.delegate not in EMULATED_DELEGATES:
        settings = settings.replace(delegate="xnnpack")
        notes["tflite"] = f"the {profile.tflite.delegate} delegate is device-only: judged with XNNPACK's ARM kernels"
    if profile.ort.provider != EMULATED_PROVIDER:
        settings = settings.replace(provider=EMULATED_PROVIDER)
        note = f"{profile.ort.provider} is device-only: judged with the CPU provider's ARM kernels"
        notes.update({"onnx": note, "ort": note})
    return settings, notes


def _verdict(result: dict[str, Any], report: dict[str, Any], samples: int, note: str | None) -> dict[str, Any]:
    """One artifact's verdict: what judged it (semantics, emulator, userland, runtime, the
    machine the guest saw and the host that emulated it) and the figures on golden.npz."""
    from edgekit.verify.hostinfo import cpu_model

    emulation, correctness = report["emulation"], result.get("correctness") or {}
    verdict = {
        "semantics": SEMANTICS,
        "emulator": f"qemu-{emulation['arch']} {emulation['qemu'].split()[0]} -cpu {emulation['cpu']}",
        "userland": f"{emulation['rootfs']}, python {emulation['python']}",
        "machine": (report.get("device") or {}).get("machine"),
        "emulating_host_cpu": cpu_model(),  # qemu computes the guest arithmetic in software: the figures do not depend on it
        "runtime": result.get("runtime"),
        "max_abs_err": correctness.get("max_abs_err"),
        "cosine": correctness.get("cosine"),
        "top1_agreement": correctness.get("top1_agreement"),
        **{k: correctness[k] for k in ("token_match", "logits_cosine") if k in correctness},  # LLM bundles
        "samples": samples,
        "passed": bool(correctness.get("passed")) and not result.get("error"),
    }
    if result.get("error"):
        verdict["error"] = result["error"]
    if note:
        verdict["note"] = note
    return verdict


def _record(ctx: BuildContext, verdicts: dict[str, dict[str, Any]]) -> None:
    """Into the staged manifest.json (its key order kept) and into the artifacts, so the
    manifest the build returns says the same."""
    path = ctx.bundle_dir / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["artifacts"]:
        entry.setdefault("verdicts", {})[VERDICT] = verdicts[entry["file"]]
    path.write_text(json.dumps(data, indent=2) + "\n")
    for artifact in ctx.artifacts:
        artifact.verdicts[VERDICT] = verdicts[artifact.file]


def _judge(ctx: BuildContext, file: str, result: dict[str, Any], verdict: dict[str, Any]) -> str | None:
    """A progress line per artifact; the problem text when the verdict failed."""
    runtime = verdict["runtime"] or {}
    if verdict.get("error"):
        ctx.reporter.info(f"{file}: ARM kernels: ERROR")
        return verdict["error"]
    label = f"{runtime.get('name')} {runtime.get('version')}"
    ctx.reporter.info(f"{file}: ARM kernels ({label}): {_figures(verdict)}: {'PASS' if verdict['passed'] else 'FAIL'}")
    if verdict["passed"]:
        return None
    correctness = result["correctness"]
    broken = correctness.get("broken") or broken_bounds(correctness, correctness.get("tolerance") or {})
    return f"{file}: {'; '.join(broken) or 'non-finite outputs'}"


def _figures(verdict: dict[str, Any]) -> str:
    if verdict.get("token_match") is not None:
        return f"token match {verdict['token_match']:.3f}, logits cosine {verdict['logits_cosine']:.6f}"
    return f"max abs err {verdict['max_abs_err']:.4g}, cosine {verdict['cosine']:.6f}"


def _fail_or_allow(ctx: BuildContext, report: dict[str, Any], problems: list[str]) -> None:
    if problems and not ctx.options.allow_drift:
        emulation = report["emulation"]
        why = ("verified because the emulated userland is cached; --verify-on none skips it" if ctx.options.verify_on is None
               else "loosen the profile's [tolerance]")
        raise VerificationError(f"ARM-kernel verification failed (qemu -cpu {emulation['cpu']}): " + " | ".join(problems),
                                f"{why}, or pass --allow-drift to keep the artifacts")
    for problem in problems:
        ctx.reporter.info(f"drift allowed (ARM kernels): {problem}")
