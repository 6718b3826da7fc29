"""Facts about the machine a build or a verification runs on: CPU, ISA features, runtimes.

Why it matters: int8 kernels differ per CPU. On x86-64 without VNNI, ONNX Runtime's u8s8 GEMM
multiplies pairs in int16 with saturation (VPMADDUBSW) and gives other numbers than the same
file on a VNNI or ARM CPU (GUIDE.md section 2: 0.606 vs 0.345 max abs err for one artifact). A
verdict or a figure is only meaningful together with the CPU that produced it, so every manifest
records this. CPU detection lives in the device runner (which must stay standalone) and is
imported from there, so the build and the device read a CPU the same way.
"""
from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["STACK_PACKAGES", "VNNI_FEATURES", "arch", "cpu_flags", "cpu_model", "describe", "has_any", "int8_isa",
           "package_versions"]

#: the features that give ORT's u8s8 kernels exact int32 accumulation (no int16 saturation)
VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")
#: runtimes and converters whose versions decide an artifact's bytes or numbers
STACK_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "tensorflow-cpu", "tf_keras", "onnx2tf",
                  "onnxsim", "ai-edge-litert", "numpy")


def _runner():
    # imported when asked: the runner needs numpy, and `edgekit doctor` must work without it
    from edgekit.runner import edgekit_runner

    return edgekit_runner


def arch() -> str:
    """``x86_64`` or ``aarch64``."""
    return _runner().host_arch()


def cpu_flags() -> frozenset:
    """This CPU's feature flags (CPUID through numpy, Linux names)."""
    return _runner().cpu_flags()


def cpu_model() -> str | None:
    return _runner().cpu_model()


def int8_isa() -> str:
    """The most capable int8-relevant ISA of this CPU (``avx2``, ``avx512_vnni``, ``neon``, ...)."""
    return _runner().int8_isa()


def has_any(features: tuple[str, ...] | list[str]) -> bool:
    """Whether this CPU has at least one of ``features``."""
    return bool(cpu_flags() & set(features))


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
