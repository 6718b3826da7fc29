"""Calibration data: named sets in ``calibration_data/`` or a user folder, fitted to the model.

Samples are ``dict[input_name, array[N, *input_shape]]`` in the model's own layout: sample ``i``
is exactly one input tensor. Preprocessing (resize, scale, mean/std, layout) is declared once per
set and applied here, so calibration, verification and the golden inputs all see the same data.

Everything is checked before any conversion: a manifest is validated by a schema, arrays are read
without unpickling (``allow_pickle=False``) and must be finite numbers, images must decode.
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic.dataclasses import dataclass as schema

from edgekit.errors import CalibrationError
from edgekit.paths import calibration_dir
from edgekit.tensors import TensorSpec

Samples = dict[str, np.ndarray]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# A user folder without a manifest: images get the ImageNet preprocessing most CNNs expect.
IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


Positive = Annotated[StrictFloat, Field(gt=0)]
Side = Annotated[StrictInt, Field(ge=1)]


@schema(frozen=True, config=ConfigDict(extra="forbid"))
class Preprocessing:
    """``model_input = transpose(resize((raw * scale - mean) / std))`` for NHWC raw images."""

    scale: Positive = 1.0
    mean: tuple[StrictFloat, ...] = (0.0,)
    std: tuple[Positive, ...] = (1.0,)  # > 0: a zero would make every sample Inf
    resize: tuple[Side, Side] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(**data)

    def apply(self, raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
        """Turn raw NHWC images ``[N, H, W, C]`` into ``[N, *spec.shape]`` model inputs."""
        if {len(self.mean), len(self.std)} - {1, raw.shape[-1]}:
            raise CalibrationError(f"preprocessing mean/std have {len(self.mean)}/{len(self.std)} values for "
                                   f"{raw.shape[-1]}-channel images", "give one value, or one per channel")
        images = _resize(raw, _spatial(spec)) if raw.shape[1:3] != _spatial(spec) else raw
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if (spec.layout or "NCHW") == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return _fit(x, spec)

    def to_json(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "resize": list(self.resize) if self.resize else None, "layout": self.layout}


class SetManifest(BaseModel):
    """The keys of a set's ``manifest.json`` that loading reads; any others document the set."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: StrictStr
    file: StrictStr
    kind: Literal["images", "text"] = "images"
    preprocessing: Preprocessing | None = None  # required for image sets
    task: StrictStr | None = None
    provenance: dict[str, Any] = {}
    extra_files: tuple[StrictStr, ...] = ()


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Model-ready samples: ``calibration`` for quantization, ``verification`` held out for
    comparing artifacts with the reference, optional labelled ``eval`` and ``train`` splits."""

    name: str
    calibration: Samples
    verification: Samples
    eval: Samples | None = None
    eval_labels: np.ndarray | None = None
    # Samples, or a function making them on first use (see train_samples)
    train: Samples | Callable[[], Samples | None] | None = None
    train_labels: np.ndarray | None = None
    task: str | None = None
    provenance: dict = field(default_factory=dict)

    def train_samples(self) -> Samples | None:
        """The ``train`` split; a lazily loaded one is made now, once."""
        if callable(self.train):
            object.__setattr__(self, "train", self.train())
        return self.train  # type: ignore[return-value]


def _spatial(spec: TensorSpec) -> tuple[int, int]:
    if len(spec.shape) != 4:
        raise CalibrationError(f"input {spec.name!r} has shape {list(spec.shape)}, not an image",
                               "pass --calibration with .npy/.npz samples of that shape")
    return (spec.shape[2], spec.shape[3]) if (spec.layout or "NCHW") == "NCHW" else (spec.shape[1], spec.shape[2])


def _resize(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image  # only image sets need PIL

    out = [np.asarray(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).resize(size[::-1], Image.BILINEAR))
           for img in raw.astype(np.uint8)]
    return np.stack(out).reshape(len(out), size[0], size[1], raw.shape[-1])


def _fit(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Give each sample the input's exact shape (adding the batch dimension), or refuse."""
    per_sample = int(np.prod(spec.shape))
    if x[0].size != per_sample:
        raise CalibrationError(
            f"calibration samples of shape {list(x.shape[1:])} do not fit input {spec.name!r} of shape {list(spec.shape)}",
            "give data with the model's input shape, or --input with the right shape")
    return np.ascontiguousarray(x.reshape((len(x),) + spec.shape).astype(spec.dtype))


def load_named(name: str, inputs: list[TensorSpec], tokenize=None) -> CalibrationSet:
    """Load a bundled set (``digits``, ``photos``, ``text``) fitted to the model's inputs."""
    folder = calibration_dir() / name
    if not (folder / "manifest.json").is_file():
        known = sorted(p.name for p in calibration_dir().iterdir() if (p / "manifest.json").is_file())
        raise CalibrationError(f"unknown calibration set {name!r}", f"use one of {', '.join(known)} or a folder path")
    return _load_manifest_set(folder, inputs, tokenize)


def _load_text_set(folder: Path, manifest: SetManifest, inputs: list[TensorSpec], tokenize) -> CalibrationSet:
    """Sentences tokenized by the model's own ``tokenize_text`` hook; ``heldout`` becomes the
    evaluation split (never used for calibration or training), an optional ``train`` split the
    (unlabelled) training split of compression, tokenized only when compression asks for it
    (the bundled set has about 90,000 train sentences; a plain build never needs them)."""
    from edgekit.text import read_rows

    if tokenize is None:
        raise CalibrationError(f"calibration set {manifest.name!r} is text, and the model defines no tokenize_text()",
                               "add tokenize_text(sentences) to the model file, or pass token samples as .npz")
    try:
        rows = read_rows(folder, manifest.model_dump())
    except (OSError, ValueError, KeyError) as exc:  # gzip/json errors are ValueError/OSError subclasses
        raise CalibrationError(f"text set {folder} is unreadable: {exc}",
                               "regenerate it with its generator script (see the manifest's provenance)") from None

    def split(name: str) -> Samples | None:
        texts = [r["text"] for r in rows if r["split"] == name]
        if not texts:
            return None
        samples = tokenize(texts)
        return {spec.name: _as_batch(np.asarray(samples[spec.name]), spec, f"{name} tokens") for spec in inputs}

    has_train = any(r["split"] == "train" for r in rows)
    return CalibrationSet(manifest.name, split("calibration"), split("verification"), split("heldout"),
                          train=(lambda: split("train")) if has_train else None,
                          task=manifest.task, provenance=manifest.provenance)


def read_manifest(folder: Path) -> SetManifest:
    """``folder/manifest.json``, validated: one line naming the key for anything missing or wrong."""
    path = folder / "manifest.json"
    hint = "see calibration_data/digits/manifest.json for a complete manifest"
    try:
        manifest = SetManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path} is not readable JSON: {exc}", hint) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "the manifest"
        got = repr(err["input"])[:60]
        problem = f"missing key {where!r}" if err["type"] == "missing" else f"{where}: {err['msg']}, got {got}"
        raise CalibrationError(f"{path}: {problem}", hint) from None
    if manifest.kind == "images" and manifest.preprocessing is None:
        raise CalibrationError(f"{path}: missing key 'preprocessing' (image sets need it)", hint)
    for name in (manifest.file, *manifest.extra_files):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CalibrationError(f"{path}: data file {name!r} is outside the set's folder", "name files inside the folder")
        if not (folder / name).is_file():
            raise CalibrationError(f"{path}: data file {name!r} does not exist", "regenerate the set or fix 'file'")
    return manifest


def _load_manifest_set(folder: Path, inputs: list[TensorSpec], tokenize=None) -> CalibrationSet:
    manifest = read_manifest(folder)
    if manifest.kind == "text":
        return _load_text_set(folder, manifest, inputs, tokenize)
    if len(inputs) != 1:
        raise CalibrationError(f"calibration set {manifest.name!r} feeds one input; the model has {len(inputs)}",
                               "pass --calibration with an .npz per sample keyed by input name")
    arrays = read_arrays(folder / manifest.file)
    spec, pre = inputs[0], manifest.preprocessing

    def fit(key: str) -> Samples | None:
        return {spec.name: pre.apply(arrays[key], spec)} if key in arrays else None

    return CalibrationSet(manifest.name, fit("calibration"), fit("verification"), fit("eval"), arrays.get("eval_labels"),
                          fit("train"), arrays.get("train_labels"), manifest.task, manifest.provenance)


def load_folder(folder: Path, inputs: list[TensorSpec], holdout: float = 0.25, tokenize=None) -> CalibrationSet:
    """Load a user folder of ``.npy``/``.npz`` samples or images; the last ``holdout`` part
    (at least one sample) is kept for verification, never used for calibration."""
    if (folder / "manifest.json").is_file():
        return _load_manifest_set(folder, inputs, tokenize)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".npy", ".npz") + _IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no .npy, .npz or image files in {folder}", "put calibration samples in the folder")
    samples = _stack(files, inputs)
    count = len(next(iter(samples.values())))
    if count < 2:
        raise CalibrationError(f"{folder} holds {count} sample", "give at least 2 samples (one is held out for verification)")
    cut = count - max(1, int(count * holdout))
    return CalibrationSet(folder.name, {k: v[:cut] for k, v in samples.items()}, {k: v[cut:] for k, v in samples.items()},
                          provenance={"folder": str(folder), "files": len(files)})


def _stack(files: list[Path], inputs: list[TensorSpec]) -> Samples:
    images = [f for f in files if f.suffix.lower() in _IMAGE_SUFFIXES]
    if images:
        return {inputs[0].name: _load_images(images, inputs)}
    parts: dict[str, list[np.ndarray]] = {spec.name: [] for spec in inputs}
    for path in files:
        for name, array in _read_arrays(path, inputs).items():
            parts[name].append(array)
    return {spec.name: np.concatenate([_as_batch(a, spec, path) for a in parts[spec.name]]) for spec in inputs}


def _read_arrays(path: Path, inputs: list[TensorSpec]) -> Samples:
    arrays = read_arrays(path)
    if list(arrays) == [""]:  # one array (.npy format)
        if len(inputs) != 1:
            raise CalibrationError(f"{path.name}: .npy files feed one input; the model has {len(inputs)}",
                                   "use .npz files keyed by input name")
        return {inputs[0].name: arrays[""]}
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        raise CalibrationError(f"{path.name} lacks input(s) {missing} (has {sorted(arrays)})", "key each array by input name")
    return {s.name: arrays[s.name] for s in inputs}


def read_arrays(path: Path) -> Samples:
    """Every array in an ``.npy`` (key ``""``) or ``.npz`` file, read without unpickling anything;
    refuses what is not finite numbers (NaN makes converters crash or calibrate garbage)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if "Object arrays" in str(exc):
            problem = "holds object arrays, which only unpickling could read (edgekit never unpickles)"
        elif "pickle" in str(exc):  # numpy's last resort for a file that is neither .npy nor .npz
            problem = "is not a .npy/.npz file (only unpickling could read it; edgekit never unpickles)"
        else:
            problem = f"is not a readable .npy/.npz file ({exc})"
        raise CalibrationError(f"calibration file {path.name} {problem}", "save numeric arrays with numpy.save or numpy.savez") from None
    for key, array in arrays.items():
        _check_values(array, f"{path.name}[{key}]" if key else path.name)
    return arrays


def _check_values(array: np.ndarray, where: str) -> None:
    if array.dtype.kind not in "biuf":
        raise CalibrationError(f"calibration data {where} has dtype {array.dtype}, not numbers",
                               "give bool, integer or float arrays")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise CalibrationError(f"calibration data {where} holds {bad} NaN/Inf value(s)", "replace or drop those samples")


def _as_batch(array: np.ndarray, spec: TensorSpec, path: object = "") -> np.ndarray:
    """Accept one sample (the input's shape, with or without batch dim) or a stack of them."""
    shape = tuple(spec.shape)
    if array.shape == shape:
        return array[None].astype(spec.dtype)
    if array.shape == shape[1:] and shape[0] == 1:
        return array[None, None].astype(spec.dtype)
    if array.shape[1:] == shape:
        return array.astype(spec.dtype)
    if shape[0] == 1 and array.shape[1:] == shape[1:]:
        return array[:, None].astype(spec.dtype)
    raise CalibrationError(f"calibration data {getattr(path, 'name', path)} has shape {list(array.shape)}, "
                           f"input {spec.name!r} needs {list(shape)}", "give samples with the model's input shape")


def _load_images(paths: list[Path], inputs: list[TensorSpec]) -> np.ndarray:
    spec = inputs[0]
    channels = spec.shape[1] if (spec.layout or "NCHW") == "NCHW" else spec.shape[-1]
    mode = "L" if channels == 1 else "RGB"
    size = _spatial(spec)
    raw = np.stack([_read_image(p, mode, size) for p in paths])
    raw = raw.reshape(raw.shape[:3] + (channels,))
    pre = Preprocessing(**IMAGENET) if channels == 3 else Preprocessing(scale=1 / 255)
    return pre.apply(raw, spec)


def _read_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode).resize(size[::-1], Image.BILINEAR))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's decoders raise all three
        raise CalibrationError(f"calibration file {path.name} is not a readable image: {exc}",
                               "give PNG/JPEG/BMP images or .npy/.npz arrays") from None


def resolve(source: str | None, inputs: list[TensorSpec], default: str | None, tokenize=None) -> CalibrationSet:
    """``--calibration`` value (set name or folder), else the model's or input's default set."""
    choice = source or default
    if choice is None:
        raise CalibrationError("no calibration data for this model",
                               "pass --calibration NAME|FOLDER (bundled sets: digits, photos)")
    path = Path(choice)
    if path.exists():
        if not path.is_dir():
            raise CalibrationError(f"--calibration {choice} is a file", "pass a folder of samples or a set name")
        return load_folder(path, inputs, tokenize=tokenize)
    if "/" in choice or choice.startswith("."):
        raise CalibrationError(f"calibration folder {choice} does not exist", "check the path")
    return load_named(choice, inputs, tokenize)
