"""The search space, read from the profile: what each runtime of the target can build.

Each trial picks one runtime and one scheme of it; the choice becomes a profile overlay (the
keys of ``targets/*.toml``) that turns the other runtime off, so one trial is one ordinary build
with one quantized artifact. Only what edgekit's quantizers already make is offered. Which ORT
layers stay in float is not drawn at random: a trial picks how many, and they are the most
sensitive ones of the default build's per-layer analysis (:mod:`edgekit.verify.sensitivity`).
A model with labelled training data may also be compressed first: the overlay then carries
``[[compress]]`` steps, which makes the trial's file a recipe (``edgekit build --recipe``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekit.targets import Precision, TargetProfile

CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
CALIBRATION_SAMPLES = (16, 32, 64, 128)
#: the TFLite precisions a trial may pick, when the profile lists or accelerates them
TFLITE_CHOICES = (Precision.INT8, Precision.INT8_FALLBACK, Precision.FP16)


#: what a trial may build for models with integer (token) inputs, per runtime, when the profile's
#: token_precisions list it: weight-only / dynamic schemes (static int8 of activations is offered
#: for ORT as ort_static_transformer makes it, the sensitive ops kept float)
TOKEN_CHOICES = {"ort": (Precision.INT8_DYNAMIC, Precision.INT8, Precision.INT4), "tflite": (Precision.INT8_DYNAMIC,)}


def runtimes(profile: TargetProfile, token_inputs: bool = False) -> list[str]:
    """The runtimes a trial may build for: ORT when the profile makes static int8 with it (token
    models: one of :data:`TOKEN_CHOICES`), TFLite when it has a precision of :data:`TFLITE_CHOICES`."""
    found = []
    if profile.ort.enabled and (token_precisions(profile, "ort") if token_inputs else Precision.INT8 in profile.ort.precisions):
        found.append("ort")
    if profile.tflite.enabled and (token_precisions(profile, "tflite") if token_inputs else tflite_precisions(profile)):
        found.append("tflite")
    return found


def token_precisions(profile: TargetProfile, runtime: str) -> list[str]:
    listed = profile.precisions(runtime, True)
    return [p.value for p in TOKEN_CHOICES[runtime] if p in listed]


def tflite_precisions(profile: TargetProfile) -> list[str]:
    allowed = {*profile.tflite.precisions, *profile.tflite.fast_precisions}
    return [p.value for p in TFLITE_CHOICES if p in allowed]


#: activation/weight type pairs onnxruntime's static quantizer makes (it refuses int8
#: activations with uint8 weights)
TYPE_PAIRS = ("int8/int8", "uint8/int8", "uint8/uint8")


def int8_types(profile: TargetProfile) -> list[str]:
    """``activation/weight`` type pairs to try, the profile's own first: the CPU provider runs
    every pair ORT makes; any other provider (NNAPI rejects int8 activations) only the profile's."""
    own = f"{profile.ort.int8.activation_type.value}/{profile.ort.int8.weight_type.value}"
    if profile.ort.provider != "CPUExecutionProvider":
        return [own]
    return [own] + [pair for pair in TYPE_PAIRS if pair != own]


#: how many of the most sensitive layers a trial may keep in float
MAX_FLOAT_LAYERS = 3


def suggest(trial: Any, profile: TargetProfile, sensitive: Sequence[str] = (), token_inputs: bool = False,
            trainable: bool = False) -> dict[str, Any]:
    """The profile overlay of an Optuna ``trial`` (with its ``compress`` steps when the model is
    ``trainable``: a PyTorch model with labelled training data); ``sensitive``: the ORT int8
    layers, most sensitive first (the default build's per-layer sensitivity), of which a trial
    keeps the first ``float_layers`` in float; ``token_inputs``: a transformer's space instead."""
    runtime = trial.suggest_categorical("runtime", runtimes(profile, token_inputs))
    if token_inputs:
        return _token_overlay(trial, profile, runtime)
    if runtime == "tflite":
        overlay: dict[str, Any] = {"ort": {"enabled": False}, "tflite": _tflite_table(trial, profile)}
    else:
        ort = {"enabled": True, "precisions": ["int8"], "int8": _ort_int8(trial, profile, sensitive)}
        overlay = {"tflite": {"enabled": False}, "ort": ort}
    compress = trainable and trial.suggest_categorical("compress", [False, True])  # one lever: TPE learns whether it pays
    steps = compress_steps(trial, _activation_signed(overlay, profile)) if compress else []
    return {**overlay, "compress": steps} if steps else overlay


def _ort_int8(trial: Any, profile: TargetProfile, sensitive: Sequence[str]) -> dict[str, Any]:
    int8 = _int8_scheme(trial, profile)
    if sensitive:
        keep = trial.suggest_categorical("float_layers", list(range(min(MAX_FLOAT_LAYERS, len(sensitive) - 1) + 1)))
        if keep:
            int8["float_nodes"] = list(sensitive[:keep])
    return int8


#: the compression a trial may run before converting, in the recipe's fixed order (prune ->
#: lowrank -> distill -> qat); each fine-tunes on the model's labelled training data
PRUNE_RATIOS = {"structured": (0.25, 0.5, 0.75), "unstructured": (0.5, 0.8)}
LOWRANK_ENERGIES = (0.9, 0.95)
DISTILL_EPOCHS = (3,)
QAT_EPOCHS = (1,)


def compress_steps(trial: Any, activation_signed: bool) -> list[dict[str, Any]]:
    """The ``[[compress]]`` tables of a trial: a prune kind and ratio, a low-rank energy,
    distillation from the original and QAT, each possibly off (QAT trains for the int8
    activation type the trial's runtime takes)."""
    steps: list[dict[str, Any]] = []
    kind = trial.suggest_categorical("prune", ["none", *PRUNE_RATIOS])
    if kind != "none":
        steps.append({"method": "prune", "kind": kind, "ratio": trial.suggest_categorical(f"prune_{kind}_ratio", list(PRUNE_RATIOS[kind]))})
    energy = trial.suggest_categorical("lowrank_energy", [0.0, *LOWRANK_ENERGIES])
    if energy:
        steps.append({"method": "lowrank", "energy": energy})
    distill = trial.suggest_categorical("distill_epochs", [0, *DISTILL_EPOCHS])
    if distill:
        steps.append({"method": "distill", "epochs": distill})
    qat = trial.suggest_categorical("qat_epochs", [0, *QAT_EPOCHS])
    if qat:
        steps.append({"method": "qat", "epochs": qat, "activation_signed": activation_signed})
    return steps


def _activation_signed(overlay: dict[str, Any], profile: TargetProfile) -> bool:
    """TFLite's full-int8 activations are signed; ORT's are the trial's (or the profile's) type."""
    if overlay["tflite"].get("enabled"):
        return True
    return overlay["ort"]["int8"].get("activation_type", profile.ort.int8.activation_type.value) == "int8"


def _tflite_table(trial: Any, profile: TargetProfile) -> dict[str, Any]:
    """One TFLite precision; for int8 its scheme: per-channel or per-tensor weights, the
    calibration sample count, and the I/O dtype (the profile's, or float I/O, which any app can
    feed; integer I/O only where the profile says the app quantizes its inputs)."""
    precision = trial.suggest_categorical("tflite_precision", tflite_precisions(profile))
    table: dict[str, Any] = {"enabled": True, "precisions": [precision]}
    if precision == Precision.INT8.value:
        io = sorted({profile.tflite.int8.io_dtype.value, "float32"})
        table["int8"] = {"per_channel": trial.suggest_categorical("tflite_per_channel", [True, False]),
                         "calibration_samples": trial.suggest_categorical("tflite_calibration_samples", list(CALIBRATION_SAMPLES)),
                         "io_dtype": trial.suggest_categorical("tflite_io_dtype", io)}
    return table


def _int8_scheme(trial: Any, profile: TargetProfile) -> dict[str, Any]:
    activation, weight = trial.suggest_categorical("int8_types", int8_types(profile)).split("/")
    return {"per_channel": trial.suggest_categorical("per_channel", [True, False]),
            "activation_type": activation, "weight_type": weight,
            "calibrate_method": trial.suggest_categorical("calibrate_method", list(CALIBRATION_METHODS)),
            "calibration_samples": trial.suggest_categorical("calibration_samples", list(CALIBRATION_SAMPLES))}


def _token_overlay(trial: Any, profile: TargetProfile, runtime: str) -> dict[str, Any]:
    """One token precision of ``runtime``; static int8 with its activation type and per-channel
    choice (what ort_static_transformer takes)."""
    other = "tflite" if runtime == "ort" else "ort"
    precision = trial.suggest_categorical(f"{runtime}_token_precision", token_precisions(profile, runtime))
    table: dict[str, Any] = {"enabled": True, "token_precisions": [precision]}
    if runtime == "ort" and precision == Precision.INT8.value:
        activation = trial.suggest_categorical("activation_type", sorted({profile.ort.int8.activation_type.value, "uint8"}))
        table["int8"] = {"activation_type": activation, "per_channel": trial.suggest_categorical("per_channel", [True, False])}
    if precision == Precision.INT4.value:
        table["int4_block_size"] = trial.suggest_categorical("int4_block_size", list(INT4_BLOCK_SIZES))
    return {other: {"enabled": False}, runtime: table}


#: MatMulNBits block sizes a weight-only int4 trial may pick (smaller: more scales, closer to fp32)
INT4_BLOCK_SIZES = (16, 32, 64, 128)


def to_toml(overlay: dict[str, Any], header: str = "") -> str:
    """An overlay as TOML (tables of scalars and lists, which is all an overlay holds)."""
    lines = [f"# {line}" for line in header.splitlines()]
    _table(overlay, "", lines)
    return "\n".join(lines).strip() + "\n"


def _table(data: dict[str, Any], prefix: str, lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_tables(v)}
    if scalars and prefix:
        lines.append(f"\n[{prefix}]")
    lines.extend(f"{key} = {_value(value)}" for key, value in scalars.items())
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            _table(value, name, lines)
        elif _is_tables(value):  # an array of tables: the recipe's [[compress]] steps
            for table in value:
                lines.append(f"\n[[{name}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in table.items())


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else repr(value)
