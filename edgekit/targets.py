"""Target profiles: one TOML file per device in ``targets/``, loaded into frozen objects.

A profile holds every fact that drives a build (CPU, runtimes, which artifacts, the int8 scheme
each runtime is fast with, tolerances). Code reads these facts; it never branches on a target's
name, so a new board is a new TOML file (``--target ./my-board.toml``), not a code change.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import tomllib

from edgekit.errors import TargetError
from edgekit.paths import targets_dir


class Precision(str, Enum):
    """Artifact precisions. ``int8`` is static full-integer (calibrated activations);
    ``int8_dynamic`` quantizes weights ahead and activations at run time (fast for FC-heavy
    transformers on CPU, not accelerated for convolutions by XNNPACK); ``int4`` is weight-only."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_DYNAMIC = "int8_dynamic"
    INT8_FALLBACK = "int8_fallback"  # TFLite: int8 weights/activations, sensitive ops left float
    INT4 = "int4"


class IODtype(str, Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True)
class Device:
    """Hardware facts, reported in the bundle and used for thread defaults."""

    cpu: str
    isa: str
    cores: int
    memory_mb: int
    os: str = "linux"
    features: tuple[str, ...] = ()
    #: ``aarch64`` or ``x86_64``: with ``features``, decides whether the build host computes like
    #: the target (then its kernels judge the artifacts) or not (then reference semantics do)
    arch: str = ""

    def __post_init__(self) -> None:
        if not self.arch:
            object.__setattr__(self, "arch", "aarch64" if self.isa.startswith("armv") else "x86_64")


@dataclass(frozen=True)
class Export:
    """How the ONNX graph is exported: opset and static shapes (NNAPI and XNNPACK want them)."""

    opset: int = 18
    static_shapes: bool = True


@dataclass(frozen=True)
class CompressConfig:
    """Target facts that shape compression: structured pruning keeps channel counts a
    multiple of ``channel_multiple`` (the SIMD width the kernels pack channels by)."""

    channel_multiple: int = 1


@dataclass(frozen=True)
class TFLiteInt8:
    """Full-integer TFLite scheme. XNNPACK's fast path: int8 per-channel weights, per-tensor
    int8 activations. ``io_dtype`` float32 keeps float I/O (quantize/dequantize inside)."""

    io_dtype: IODtype = IODtype.INT8


@dataclass(frozen=True)
class TFLiteConfig:
    """Which TFLite artifacts to build and how the device runs them."""

    enabled: bool = True
    delegate: str = "xnnpack"
    threads: int = 1
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8)
    #: precisions for models with integer (token) inputs: transformers punish full-int8
    token_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8_DYNAMIC)
    int8: TFLiteInt8 = TFLiteInt8()
    delegate_ops: tuple[str, ...] = ()
    #: precisions the delegate accelerates; others run (correctly) on slower reference or
    #: hybrid kernels, and the compatibility report says so
    fast_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8)


@dataclass(frozen=True)
class ORTInt8:
    """Static QDQ scheme for onnxruntime.quantization. Signedness matters per target: NNAPI
    rejects int8 activations, x86 without VNNI is fastest with uint8 activations / int8 weights."""

    activation_type: IODtype = IODtype.INT8
    weight_type: IODtype = IODtype.INT8
    per_channel: bool = True
    #: 7-bit weights (onnxruntime.quantization's reduce_range)
    reduce_range: bool = False
    #: int8 weights use the full 8-bit range only when the build host's CPU has one of these
    #: features; otherwise reduce_range, because ORT's x86 u8s8 kernels without VNNI saturate in int16
    full_range_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class ORTConfig:
    """Which ONNX Runtime artifacts to build and how the device runs them."""

    enabled: bool = True
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    precisions: tuple[Precision, ...] = (Precision.INT8,)
    token_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT4)
    int8: ORTInt8 = ORTInt8()
    #: MatMulNBits block size for int4 weight-only artifacts
    int4_block_size: int = 32
    ort_format: bool = True
    optimization_style: str = "Fixed"
    mobile_usability_check: bool = False


@dataclass(frozen=True)
class Tolerance:
    """Verification bounds for one precision. ``max_rel_err`` is relative to the largest
    reference output magnitude, so one profile fits models with different output scales."""

    max_rel_err: float | None = None
    min_cosine: float | None = None
    min_top1_agreement: float | None = None


@dataclass(frozen=True)
class TargetProfile:
    """A device, as data. Load with :func:`load_target`."""

    name: str
    description: str
    device: Device
    export: Export = Export()
    tflite: TFLiteConfig = TFLiteConfig()
    ort: ORTConfig = ORTConfig()
    compress: CompressConfig = CompressConfig()
    tolerance: dict[str, Tolerance] = field(default_factory=dict)
    source: str = ""

    def tolerance_for(self, precision: Precision | str) -> Tolerance:
        """The tolerance for ``precision`` (no bound when the profile names none)."""
        return self.tolerance.get(Precision(precision).value, Tolerance())

    def precisions(self, runtime: str, token_inputs: bool) -> tuple[Precision, ...]:
        """What to build for ``runtime`` (tflite|ort): models with integer (token) inputs get the
        profile's transformer list, image/float models the regular one."""
        cfg = self.tflite if runtime == "tflite" else self.ort
        return cfg.token_precisions if token_inputs else cfg.precisions


_ENUMS = {"precisions": Precision, "token_precisions": Precision, "fast_precisions": Precision,
          "io_dtype": IODtype, "activation_type": IODtype, "weight_type": IODtype}
_NESTED = {"device": Device, "export": Export, "tflite": TFLiteConfig, "ort": ORTConfig, "compress": CompressConfig}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Construct dataclass ``cls`` from a TOML table, rejecting unknown keys by name."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {unknown}", f"allowed keys: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        try:
            kwargs[key] = _convert(cls, key, value, f"{where}.{key}")
        except ValueError as exc:
            raise TargetError(f"{where}.{key}: {exc}", "fix the value in the profile") from None
    return cls(**kwargs)


def _convert(cls: type, key: str, value: Any, where: str) -> Any:
    if key == "int8":
        sub = TFLiteInt8 if cls is TFLiteConfig else ORTInt8
        return _build(sub, value, where)
    if key in _NESTED and isinstance(value, dict):
        return _build(_NESTED[key], value, where)
    if key in _ENUMS:
        enum = _ENUMS[key]
        return tuple(enum(v) for v in value) if isinstance(value, list) else enum(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _validate(profile: TargetProfile) -> None:
    """Reject profiles that would fail late in a build."""
    if not (profile.tflite.enabled or profile.ort.enabled):
        raise TargetError(f"profile {profile.name!r} enables no runtime", "set tflite.enabled or ort.enabled")
    for cfg, label in ((profile.tflite, "tflite"), (profile.ort, "ort")):
        if cfg.threads < 1:
            raise TargetError(f"profile {profile.name!r}: {label}.threads must be >= 1", "set a positive thread count")
        if cfg.enabled and not cfg.precisions:
            raise TargetError(f"profile {profile.name!r}: {label}.precisions is empty", "list at least one precision")
    if Precision.FP16 in (*profile.ort.precisions, *profile.ort.token_precisions):
        raise TargetError(f"profile {profile.name!r}: ort fp16 artifacts are not supported", "remove fp16 from ort precisions")
    if Precision.INT4 in (*profile.tflite.precisions, *profile.tflite.token_precisions):
        raise TargetError(f"profile {profile.name!r}: tflite int4 artifacts are not supported", "use int4 with ort only")
    if Precision.INT8_FALLBACK in (*profile.ort.precisions, *profile.ort.token_precisions):
        raise TargetError(f"profile {profile.name!r}: int8_fallback is a TFLite scheme", "use int8 (static QDQ) for ort")


def _parse_tolerances(data: dict[str, Any], where: str) -> dict[str, Tolerance]:
    out = {}
    for precision, table in data.items():
        Precision(precision)  # raises ValueError with the bad name
        out[precision] = _build(Tolerance, table, f"{where}.tolerance.{precision}")
    return out


def parse_target(data: dict[str, Any], source: str) -> TargetProfile:
    """Build a validated :class:`TargetProfile` from a parsed TOML document."""
    data = dict(data)
    try:
        tolerance = _parse_tolerances(data.pop("tolerance", {}), source)
    except ValueError as exc:
        raise TargetError(f"{source}: {exc}", "use fp32, fp16 or int8 as tolerance tables") from None
    for required in ("name", "description", "device"):
        if required not in data:
            raise TargetError(f"{source}: missing required key {required!r}", "see targets/host.toml for a complete profile")
    profile = _build(TargetProfile, {**data, "source": source}, source)
    profile = TargetProfile(**{**profile.__dict__, "tolerance": tolerance})
    _validate(profile)
    return profile


def list_targets() -> list[str]:
    """Names of the bundled target profiles."""
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def load_target(name_or_path: str | Path) -> TargetProfile:
    """Load a bundled profile by name (``rpi4``) or any profile file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = targets_dir() / f"{text}.toml"
        if not path.is_file():
            raise TargetError(f"unknown target {text!r}", f"choose one of {', '.join(list_targets())} or pass a .toml file")
    if not path.is_file():
        raise TargetError(f"target file {text} does not exist", "check the path or use a bundled target name")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"target file {path} is not valid TOML: {exc}", "fix the TOML syntax") from None
    return parse_target(data, str(path))
