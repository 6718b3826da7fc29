"""Calibration data: named sets in ``calibration_data/`` or a user folder, fitted to the model.

Samples are ``dict[input_name, array[N, *input_shape]]`` in the model's own layout: sample ``i``
is exactly one input tensor. Preprocessing (resize, scale, mean/std, layout) is declared once per
set and applied here, so calibration, verification and the golden inputs all see the same data.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import CalibrationError
from edgekit.paths import calibration_dir
from edgekit.tensors import TensorSpec

Samples = dict[str, np.ndarray]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# A user folder without a manifest: images get the ImageNet preprocessing most CNNs expect.
IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class Preprocessing:
    """``model_input = transpose(resize((raw * scale - mean) / std))`` for NHWC raw images."""

    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: tuple[int, int] | None = None
    layout: str = "NCHW"

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        resize = data.get("resize")
        return cls(float(data.get("scale", 1.0)), tuple(data.get("mean", (0.0,))), tuple(data.get("std", (1.0,))),
                   tuple(resize) if resize else None, data.get("layout", "NCHW"))

    def apply(self, raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
        """Turn raw NHWC images ``[N, H, W, C]`` into ``[N, *spec.shape]`` model inputs."""
        images = _resize(raw, _spatial(spec)) if raw.shape[1:3] != _spatial(spec) else raw
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if (spec.layout or "NCHW") == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return _fit(x, spec)

    def to_json(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "resize": list(self.resize) if self.resize else None, "layout": self.layout}


@dataclass(frozen=True)
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


def _load_text_set(folder: Path, manifest: dict, inputs: list[TensorSpec], tokenize) -> CalibrationSet:
    """Sentences tokenized by the model's own ``tokenize_text`` hook; ``heldout`` becomes the
    evaluation split (never used for calibration or training), an optional ``train`` split the
    (unlabelled) training split of compression, tokenized only when compression asks for it
    (the bundled set has about 90,000 train sentences; a plain build never needs them)."""
    from edgekit.text import read_rows

    if tokenize is None:
        raise CalibrationError(f"calibration set {manifest['name']!r} is text, and the model defines no tokenize_text()",
                               "add tokenize_text(sentences) to the model file, or pass token samples as .npz")
    try:
        rows = read_rows(folder, manifest)
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
    return CalibrationSet(manifest["name"], split("calibration"), split("verification"), split("heldout"),
                          train=(lambda: split("train")) if has_train else None,
                          task=manifest.get("task"), provenance=manifest.get("provenance", {}))


def _load_manifest_set(folder: Path, inputs: list[TensorSpec], tokenize=None) -> CalibrationSet:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("kind") == "text":
        return _load_text_set(folder, manifest, inputs, tokenize)
    if len(inputs) != 1:
        raise CalibrationError(f"calibration set {manifest['name']!r} feeds one input; the model has {len(inputs)}",
                               "pass --calibration with an .npz per sample keyed by input name")
    pre = Preprocessing.from_json(manifest["preprocessing"])
    with np.load(folder / manifest["file"], allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    spec = inputs[0]

    def fit(key: str) -> Samples | None:
        return {spec.name: pre.apply(arrays[key], spec)} if key in arrays else None

    return CalibrationSet(manifest["name"], fit("calibration"), fit("verification"), fit("eval"), arrays.get("eval_labels"),
                          fit("train"), arrays.get("train_labels"), manifest.get("task"), manifest.get("provenance", {}))


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
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise CalibrationError(f"{path.name}: .npy files feed one input; the model has {len(inputs)}",
                                   "use .npz files keyed by input name")
        return {inputs[0].name: np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as data:
        missing = [s.name for s in inputs if s.name not in data.files]
        if missing:
            raise CalibrationError(f"{path.name} lacks input(s) {missing} (has {data.files})", "key each array by input name")
        return {s.name: data[s.name] for s in inputs}


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
    from PIL import Image

    spec = inputs[0]
    channels = spec.shape[1] if (spec.layout or "NCHW") == "NCHW" else spec.shape[-1]
    mode = "L" if channels == 1 else "RGB"
    size = _spatial(spec)
    raw = np.stack([np.asarray(Image.open(p).convert(mode).resize(size[::-1], Image.BILINEAR)) for p in paths])
    raw = raw.reshape(raw.shape[:3] + (channels,))
    pre = Preprocessing(**IMAGENET) if channels == 3 else Preprocessing(scale=1 / 255)
    return pre.apply(raw, spec)


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
