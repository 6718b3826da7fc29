"""Facts about the machine a build or a verification runs on: CPU, ISA features, runtimes.

Why it matters: int8 kernels differ per CPU. On x86-64 without VNNI, ONNX Runtime's u8s8 GEMM
multiplies pairs in int16 with saturation (VPMADDUBSW) and gives other numbers than the same
file on a VNNI or ARM CPU (GUIDE.md section 2: 0.606 vs 0.345 max abs err for one artifact). A
verdict or a figure is only meaningful together with the CPU that produced it, so every manifest
records this.
"""
from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

#: x86 features that change int8 arithmetic or speed, most capable first
_X86_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2")
#: the features that give ORT's u8s8 kernels exact int32 accumulation (no int16 saturation)
VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")
#: runtimes and converters whose versions decide an artifact's bytes or numbers
STACK_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "tensorflow-cpu", "tf_keras", "onnx2tf",
                  "onnxsim", "ai-edge-litert", "numpy")


def arch() -> str:
    """``x86_64`` or ``aarch64`` (``arm64`` on macOS is reported as ``aarch64``)."""
    machine = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


#: numpy's CPUID names -> the Linux /proc/cpuinfo names used everywhere here
_NUMPY_NAMES = {"AVX": "avx", "AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f",
                "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16",
                "AVX512FP16": "avx512_fp16", "NEON": "neon", "ASIMD": "asimd", "ASIMDHP": "asimdhp",
                "ASIMDDP": "asimddp", "ASIMDFHM": "asimdfhm", "SVE": "sve"}


def _proc_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _cpuid_flags() -> frozenset[str] | None:
    """What the CPU itself reports (CPUID / HWCAP), through numpy's dispatcher, or None."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    return frozenset(_NUMPY_NAMES[k] for k, on in features.items() if on and k in _NUMPY_NAMES)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, in Linux's names.

    CPUID (read by numpy's dispatcher) is authoritative: under ``qemu-x86_64 -cpu Haswell``
    /proc/cpuinfo still describes the real host, CPUID the emulated CPU, and the runtimes follow
    CPUID. /proc/cpuinfo adds what numpy does not name (``avx_vnni``, ``amx_int8``) only when it
    agrees with CPUID on the features both name, i.e. when it describes this CPU."""
    proc, cpuid = _proc_flags(), _cpuid_flags()
    if cpuid is None:
        return proc
    known = set(_NUMPY_NAMES.values())
    if (proc & known) == cpuid:
        return frozenset(proc | cpuid)
    return cpuid


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or "unknown"


def has_any(features: tuple[str, ...] | list[str]) -> bool:
    """Whether this CPU has at least one of ``features``."""
    return bool(cpu_flags() & set(features))


def int8_isa() -> str:
    """The best int8-relevant ISA of this CPU: ``amx_int8``, ``avx512_vnni``, ``avx_vnni``,
    ``avx512bw``, ``avx2`` on x86; ``asimddp`` (dot product) or ``neon`` on ARM."""
    flags = cpu_flags()
    if arch() == "aarch64":
        return "asimddp" if "asimddp" in flags else "neon"
    return next((f for f in _X86_INT8 if f in flags), arch())


def package_versions(names: tuple[str, ...] = STACK_PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent), read from metadata without importing anything."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe() -> dict:
    """The verifying host, as the manifest records it."""
    flags = cpu_flags()
    interesting = sorted(f for f in flags if f.startswith(("avx", "amx", "asimd", "fma", "sve")) or f in ("neon", "fphp"))
    return {"arch": arch(), "cpu": cpu_model(), "int8_isa": int8_isa(), "flags": interesting,
            "python": platform.python_version(), "packages": package_versions()}
