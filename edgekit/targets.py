"""Target profiles: one TOML file per device in ``targets/``, loaded into frozen objects.

A profile holds every fact that drives a build (CPU, runtimes, which artifacts, the int8 scheme
each runtime is fast with, tolerances). Code reads these facts; it never branches on a target's
name, so a new board is a new TOML file (``--target ./my-board.toml``), not a code change.

The classes are pydantic dataclasses: the schema is the types below, so a wrong value is refused
when the profile is loaded, with the key path that holds it, not found mid-build. Scalars are
strict (TOML has types; ``threads = "4"`` is a mistake to report, not a string to coerce); lists
become tuples and names become enums, as declared.
"""
from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import tomllib
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

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


_SCHEMA = ConfigDict(extra="forbid")
Count = Annotated[StrictInt, Field(ge=1)]
NonNegative = Annotated[StrictFloat, Field(ge=0)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


@dataclass(frozen=True, config=_SCHEMA)
class Device:
    """Hardware facts, reported in the bundle and used for thread defaults. ``arch`` is the
    machine the runtimes run on (aarch64 or x86_64); it defaults from ``isa`` (``armv...`` ISAs
    are aarch64 here), but profiles state it."""

    cpu: StrictStr
    isa: StrictStr
    #: with ``features``, decides whether the build host computes like the target (then its
    #: kernels judge the artifacts) or not (then ONNX Runtime's reference semantics do)
    arch: Literal["aarch64", "x86_64"]
    cores: Count
    memory_mb: Count
    os: StrictStr = "linux"
    features: tuple[StrictStr, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _arch_from_isa(cls, data: Any) -> Any:
        given = data.kwargs if isinstance(data, ArgsKwargs) else data
        if not isinstance(given, dict) or "arch" in given or not isinstance(given.get("isa"), str):
            return data
        given = {**given, "arch": "aarch64" if given["isa"].startswith("armv") else "x86_64"}
        return ArgsKwargs(data.args, given) if isinstance(data, ArgsKwargs) else given


@dataclass(frozen=True, config=_SCHEMA)
class Export:
    """How the ONNX graph is exported: opset and static shapes (NNAPI and XNNPACK want them)."""

    opset: Count = 18
    static_shapes: StrictBool = True


@dataclass(frozen=True, config=_SCHEMA)
class CompressConfig:
    """Target facts that shape compression: structured pruning keeps channel counts a
    multiple of ``channel_multiple`` (the SIMD width the kernels pack channels by)."""

    channel_multiple: Count = 1


@dataclass(frozen=True, config=_SCHEMA)
class Budget:
    """How much quality the compression steps may cost, judged against the original model:
    top-1 drop in percentage points, output cosine, perplexity increase in percent. None: no bound."""

    max_top1_drop_pp: NonNegative | None = 1.0
    min_cosine: Fraction | None = 0.98
    max_ppl_increase_pct: NonNegative | None = 5.0


@dataclass(frozen=True, config=_SCHEMA)
class TFLiteInt8:
    """Full-integer TFLite scheme. XNNPACK's fast path: int8 per-channel weights, per-tensor
    int8 activations. ``io_dtype`` float32 keeps float I/O (quantize/dequantize inside)."""

    io_dtype: IODtype = IODtype.INT8
    #: one weight scale per output channel (onnx2tf's ``-qt per-channel``, XNNPACK's fast path
    #: and the accurate one) or one per tensor (``-qt per-tensor``); ``edgekit search`` tries both
    per_channel: StrictBool = True
    #: calibrate on the first N samples of the calibration split; None: all of them
    calibration_samples: Count | None = None


@dataclass(frozen=True, config=_SCHEMA)
class TFLiteConfig:
    """Which TFLite artifacts to build and how the device runs them."""

    enabled: StrictBool = True
    #: the device runner's --delegate choices
    delegate: Literal["xnnpack", "nnapi", "gpu", "none"] = "xnnpack"
    threads: Count = 1
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8)
    #: precisions for models with integer (token) inputs: transformers punish full-int8
    token_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8_DYNAMIC)
    int8: TFLiteInt8 = TFLiteInt8()
    delegate_ops: tuple[StrictStr, ...] = ()
    #: precisions the delegate accelerates; others run (correctly) on slower reference or
    #: hybrid kernels, and the compatibility report says so
    fast_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8)


@dataclass(frozen=True, config=_SCHEMA)
class ORTInt8:
    """Static QDQ scheme for onnxruntime.quantization. Signedness matters per target: NNAPI
    rejects int8 activations, x86 without VNNI is fastest with uint8 activations / int8 weights."""

    activation_type: IODtype = IODtype.INT8
    weight_type: IODtype = IODtype.INT8
    per_channel: StrictBool = True
    #: int8 weights use the full 8-bit range only when the build host's CPU has one of these
    #: features; otherwise reduce_range (7-bit weights), because ORT's x86 u8s8 kernels without
    #: VNNI saturate in int16
    full_range_features: tuple[StrictStr, ...] = ()
    reduce_range: StrictBool = False
    #: how activation ranges are calibrated (onnxruntime's CalibrationMethod); ``edgekit search``
    #: tries all three
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    #: calibrate on the first N samples of the calibration split; None: all of them
    calibration_samples: Count | None = None
    #: nodes of the preprocessed graph left in float (onnxruntime's nodes_to_exclude);
    #: ``edgekit search`` picks them from the per-layer sensitivity of the default build
    float_nodes: tuple[StrictStr, ...] = ()


@dataclass(frozen=True, config=_SCHEMA)
class ORTConfig:
    """Which ONNX Runtime artifacts to build and how the device runs them."""

    enabled: StrictBool = True
    provider: StrictStr = "CPUExecutionProvider"
    threads: Count = 1
    precisions: tuple[Precision, ...] = (Precision.INT8,)
    token_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT4)
    int8: ORTInt8 = ORTInt8()
    #: MatMulNBits block size for int4 weight-only artifacts
    int4_block_size: Count = 32
    ort_format: StrictBool = True
    #: convert_onnx_models_to_ort's --optimization_style
    optimization_style: Literal["Fixed", "Runtime"] = "Fixed"
    mobile_usability_check: StrictBool = False


@dataclass(frozen=True, config=_SCHEMA)
class Tolerance:
    """Verification bounds for one precision. ``max_rel_err`` is relative to the largest
    reference output magnitude, so one profile fits models with different output scales."""

    max_rel_err: NonNegative | None = None
    min_cosine: Fraction | None = None
    min_top1_agreement: Fraction | None = None


@dataclass(frozen=True, config=_SCHEMA)
class LlmTolerance:
    """Verdict bounds for a decoder artifact on the golden prompts: the greedy tokens' match with
    the original's (up to each prompt's first difference) and the first-step logits' cosine."""

    min_token_match: Fraction | None = None
    min_logits_cosine: Fraction | None = None


@dataclass(frozen=True, config=_SCHEMA)
class LlmConfig:
    """How decoder LLMs are built for this device (the ``[llm]`` table).

    ``context`` sizes the KV cache (and the perplexity window); ``prefill_chunk`` is how many
    prompt tokens one prefill step takes (the static prefill signature's length);
    ``int4_block_size`` the weights per int4 scale (32 matches GGUF's Q4 blocks)."""

    context: Count = 512
    prefill_chunk: Count = 64
    ort_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8, Precision.INT4)
    tflite_precisions: tuple[Precision, ...] = ()
    ort_format: StrictBool = True
    int4_block_size: Count = 32
    #: ``search`` (calibration-aware, edgekit.llm.quantize), ``rtn``, ``rtn_sym`` or ``grid``
    int4_scheme: Literal["search", "rtn", "rtn_sym", "grid"] = "search"
    #: the int4 artifact's byte budget (fraction of fp32) within which outlying matrices stay int8
    int4_max_ratio: Fraction = 0.2
    #: the int4 artifact's tied embedding / LM head: ``int8``, or ``gptq`` (4 bits, edgekit.llm._gptq)
    int4_head: Literal["int8", "gptq"] = "int8"
    #: the int8 artifact's projections: ``grid`` stores weights already on a block grid (a GGUF
    #: Q4_1 source) exactly and searches the rest; ``search``; ``rtn_sym`` (no offsets: fastest)
    int8_scheme: Literal["search", "rtn_sym", "grid"] = "grid"
    golden_prompts: Count = 16
    golden_new_tokens: Count = 32
    tolerance: dict[Precision, LlmTolerance] = dataclasses.field(default_factory=dict)

    @field_validator("tolerance", mode="after")
    @classmethod
    def _plain_keys(cls, value: dict[Precision, LlmTolerance]) -> dict[str, LlmTolerance]:
        return {Precision(k).value: v for k, v in value.items()}

    def tolerance_for(self, precision: Precision | str) -> LlmTolerance:
        return self.tolerance.get(Precision(precision).value, LlmTolerance())


@dataclass(frozen=True, config=_SCHEMA)
class TargetProfile:
    """A device, as data. Load with :func:`load_target`."""

    name: StrictStr
    description: StrictStr
    device: Device
    export: Export = Export()
    tflite: TFLiteConfig = TFLiteConfig()
    ort: ORTConfig = ORTConfig()
    compress: CompressConfig = CompressConfig()
    budget: Budget = Budget()
    llm: LlmConfig = LlmConfig()
    #: keyed by precision name (``fp32``, ``int8``, ...)
    tolerance: dict[Precision, Tolerance] = dataclasses.field(default_factory=dict)
    source: StrictStr = ""

    @field_validator("tolerance", mode="after")
    @classmethod
    def _plain_keys(cls, value: dict[Precision, Tolerance]) -> dict[str, Tolerance]:
        # str keys: a str Enum hashes by its member name, so "int8" would not find Precision.INT8
        return {Precision(k).value: v for k, v in value.items()}

    def tolerance_for(self, precision: Precision | str) -> Tolerance:
        """The tolerance for ``precision`` (no bound when the profile names none)."""
        return self.tolerance.get(Precision(precision).value, Tolerance())

    def precisions(self, runtime: str, token_inputs: bool) -> tuple[Precision, ...]:
        """What to build for ``runtime`` (tflite|ort): models with integer (token) inputs get the
        profile's transformer list, image/float models the regular one."""
        cfg = self.tflite if runtime == "tflite" else self.ort
        return cfg.token_precisions if token_inputs else cfg.precisions


# what each pydantic error type means, said as what the value must be
_EXPECTED = {"int_type": "must be an integer", "int_from_float": "must be an integer", "float_type": "must be a number",
             "bool_type": "must be true or false", "string_type": "must be a string", "tuple_type": "must be a list",
             "dataclass_type": "must be a table", "dict_type": "must be a table", "greater_than_equal": "must be >= {ge}",
             "less_than_equal": "must be <= {le}", "enum": "must be one of {expected}", "literal_error": "must be {expected}"}


def _where(loc: tuple) -> str:
    """``("tflite", "precisions", 0)`` -> ``tflite.precisions[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _table(loc: tuple) -> type | None:
    """The schema class of the TOML table at ``loc`` (to name its allowed keys)."""
    if loc[:1] == ("tolerance",):
        return Tolerance if len(loc) == 2 else None
    if loc[:2] == ("llm", "tolerance"):
        return LlmTolerance if len(loc) == 3 else None
    cls: Any = TargetProfile
    for part in loc:
        cls = get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
    return cls if dataclasses.is_dataclass(cls) else None


def _describe(errors: list[dict], source: str) -> TargetError:
    """One line for the first problem pydantic found (the others are counted)."""
    first = errors[0]
    loc, kind = tuple(first["loc"]), first["type"]
    more = f"; {len(errors) - 1} more problem(s) after this one" if len(errors) > 1 else ""
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        unknown = [e["loc"][-1] for e in errors if e["type"] == kind and tuple(e["loc"][:-1]) == loc[:-1]]
        table = _table(loc[:-1])
        allowed = sorted(f.name for f in dataclasses.fields(table) if f.name != "source") if table else []
        where = f"{_where(loc[:-1])}: " if loc[:-1] else ""
        return TargetError(f"{source}: {where}unknown key(s) {unknown}", f"allowed keys: {allowed}")
    if kind == "missing":
        where = f"{_where(loc[:-1])}: " if loc[:-1] else ""
        return TargetError(f"{source}: {where}missing required key {loc[-1]!r}",
                           f"see targets/host.toml for a complete profile{more}")
    if loc[-1] == "[key]":  # a table name, e.g. [tolerance.int2]
        loc = loc[:-1]
    expected = _EXPECTED.get(kind, first["msg"]).format(**first.get("ctx", {}))
    got = repr(first["input"])
    got = got if len(got) <= 60 else got[:57] + "..."
    return TargetError(f"{source}: {_where(loc)} {expected}, got {got}", f"fix the value in the profile{more}")


def _validate(profile: TargetProfile) -> None:
    """Reject combinations the schema's types cannot express, which would fail late in a build."""
    where = f"{profile.source}: profile {profile.name!r}"
    if not (profile.tflite.enabled or profile.ort.enabled):
        raise TargetError(f"{where} enables no runtime", "set tflite.enabled or ort.enabled")
    for cfg, label in ((profile.tflite, "tflite"), (profile.ort, "ort")):
        if cfg.enabled and not cfg.precisions:
            raise TargetError(f"{where}: {label}.precisions is empty", "list at least one precision")
    if Precision.FP16 in (*profile.ort.precisions, *profile.ort.token_precisions):
        raise TargetError(f"{where}: ort fp16 artifacts are not supported", "remove fp16 from ort precisions")
    if Precision.INT4 in (*profile.tflite.precisions, *profile.tflite.token_precisions):
        raise TargetError(f"{where}: tflite int4 artifacts are not supported", "use int4 with ort only")
    if Precision.INT8_FALLBACK in (*profile.ort.precisions, *profile.ort.token_precisions):
        raise TargetError(f"{where}: int8_fallback is a TFLite scheme", "use int8 (static QDQ) for ort")


def parse_target(data: dict[str, Any], source: str) -> TargetProfile:
    """Build a validated :class:`TargetProfile` from a parsed TOML document."""
    try:
        profile = TargetProfile(**{**data, "source": source})
    except ValidationError as exc:
        raise _describe(exc.errors(), source) from None
    _validate(profile)
    return profile


def list_targets() -> list[str]:
    """Names of the bundled target profiles."""
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def merge_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay``'s keys laid over it, tables merged key by key (lists replaced)."""
    merged = dict(base)
    for key, value in overlay.items():
        inner = merged.get(key)
        merged[key] = merge_overlay(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return merged


def read_toml(path: Path, what: str = "target") -> dict[str, Any]:
    """A parsed TOML file; an unreadable or malformed one is a one-line :class:`TargetError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{what} file {path} is not valid TOML: {exc}", "fix the TOML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{what} file {path} cannot be read: {exc}", "check the file (UTF-8 TOML)") from None


def load_target(name_or_path: str | Path, overlay: Path | None = None) -> TargetProfile:
    """Load a bundled profile by name (``rpi4``) or any profile file by path; ``overlay`` is a
    profile overlay TOML (e.g. ``edgekit search``'s ``chosen.toml``) merged over it, and the
    result validated like any profile."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = targets_dir() / f"{text}.toml"
        if not path.is_file():
            raise TargetError(f"unknown target {text!r}", f"choose one of {', '.join(list_targets())} or pass a .toml file")
    if not path.is_file():
        raise TargetError(f"target file {text} does not exist", "check the path or use a bundled target name")
    data = read_toml(path)
    if overlay is None:
        return parse_target(data, str(path))
    if not Path(overlay).is_file():
        raise TargetError(f"overlay file {overlay} does not exist", "check the --overlay path")
    from edgekit.recipefile import split_recipe

    tables, _ = split_recipe(read_toml(Path(overlay), "overlay"))  # the steps are the recipe's part
    return parse_target(merge_overlay(data, tables), f"{path} + {overlay}")


def load_all() -> tuple[list[TargetProfile], list[TargetError]]:
    """Every bundled profile that loads, and one error per file that does not: a broken file
    must not hide the good ones from ``edgekit targets``."""
    profiles, broken = [], []
    for name in list_targets():
        try:
            profiles.append(load_target(targets_dir() / f"{name}.toml"))
        except TargetError as exc:
            broken.append(exc)
    return profiles, broken
