"""Generate edgekit's named calibration sets (``digits`` and ``photos``).

Run from the repository root::

    .venv/bin/python calibration_data/build_sets.py              # rewrite both sets in place
    .venv/bin/python calibration_data/build_sets.py --out /tmp/x # write elsewhere
    .venv/bin/python calibration_data/build_sets.py --only digits

Everything is derived from data that installed packages ship (scikit-learn's 8x8 digits and
its two sample JPEGs), so nothing is downloaded. The output is deterministic: running the script
twice with the same package versions gives byte-identical files (the ``.npz`` archives are
written with a fixed zip timestamp, see ``save_npz``).

Each set is a folder ``<name>/`` holding ``<name>.npz`` (raw uint8 samples, NHWC, no pickles)
and ``manifest.json`` (array roles and the preprocessing that turns raw samples into model
inputs). See ``calibration_data/README.md`` for the manifest fields.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
SET_NAMES = ("digits", "photos")
HERE = Path(__file__).resolve().parent
SCRIPT = "calibration_data/build_sets.py"

# Digits: 20% stratified test split (360 images), then small subsets for quantization.
DIGITS_TEST_FRACTION = 0.2
DIGITS_CALIBRATION = 128  # drawn from the train split
DIGITS_VERIFICATION = 32  # drawn from the test split, so it can never overlap calibration

# Photos: square crops of the sample JPEGs resized to a typical ImageNet input size.
PHOTO_SIZE = 224
PHOTO_CROP_SIDES = (427, 320, 224, 160)  # crop side in source pixels (427 = full image height)
PHOTO_CROP_ANCHORS = ((0.0, 0.0), (1.0, 1.0), (0.5, 0.5), (0.25, 0.75))  # (y, x) fractions
PHOTO_VERIFICATION_EVERY = 4  # every 4th crop goes to verification: 24 calibration, 8 verification

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.e+-]+,?\s*)+)\]")

# A fixed zip timestamp; numpy's own savez stamps the current time, breaking byte-identity.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Write ``arrays`` as an ``.npz`` loadable by ``np.load(allow_pickle=False)``, reproducibly."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.ascontiguousarray(value), allow_pickle=False)


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` as stable, human-readable JSON."""
    text = json.dumps(manifest, indent=2)
    # Put short lists of numbers (shapes, mean/std) on one line, as a person would write them.
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]",
                            text)
    path.write_text(text + "\n", encoding="utf-8")


def array_entries(arrays: Mapping[str, np.ndarray], roles: Mapping[str, str]) -> list[dict]:
    """Describe every array of the npz for the manifest (key, shape, dtype, role)."""
    return [
        {"key": key, "shape": list(arr.shape), "dtype": str(arr.dtype), "role": roles[key]}
        for key, arr in arrays.items()
    ]


def assert_disjoint(a: np.ndarray, b: np.ndarray) -> None:
    """Fail if any sample of ``a`` equals (byte for byte) a sample of ``b``."""
    seen = {row.tobytes() for row in a}
    clash = sum(row.tobytes() in seen for row in b)
    if clash:
        raise AssertionError(f"{clash} sample(s) occur in both subsets")


def digits_arrays() -> dict[str, np.ndarray]:
    """Split scikit-learn's digits into train/eval and the calibration/verification subsets."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    raw = data.images.astype(np.uint8)[..., None]  # float 0..16 -> uint8 NHWC [N, 8, 8, 1]
    labels = data.target.astype(np.int64)
    idx = np.arange(len(raw))
    train_idx, eval_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=SEED
    )
    # Keep the original dataset order inside each split: easier to trace back to load_digits.
    train_idx, eval_idx = np.sort(train_idx), np.sort(eval_idx)
    calib_idx, _ = train_test_split(
        train_idx, train_size=DIGITS_CALIBRATION, stratify=labels[train_idx], random_state=SEED
    )
    verif_idx, _ = train_test_split(
        eval_idx, train_size=DIGITS_VERIFICATION, stratify=labels[eval_idx], random_state=SEED
    )
    calib_idx, verif_idx = np.sort(calib_idx), np.sort(verif_idx)
    assert_disjoint(raw[calib_idx], raw[verif_idx])
    return {
        "calibration": raw[calib_idx],
        "calibration_labels": labels[calib_idx],
        "verification": raw[verif_idx],
        "verification_labels": labels[verif_idx],
        "eval": raw[eval_idx],
        "eval_labels": labels[eval_idx],
        "train": raw[train_idx],
        "train_labels": labels[train_idx],
    }


def digits_manifest(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Manifest of the digits set."""
    roles = {
        "calibration": "calibration",
        "calibration_labels": "labels_calibration",
        "verification": "verification",
        "verification_labels": "labels_verification",
        "eval": "eval",
        "eval_labels": "labels_eval",
        "train": "train",
        "train_labels": "labels_train",
    }
    return {
        "name": "digits",
        "description": (
            "scikit-learn 8x8 handwritten digits (1797 images, 10 classes). Stratified 80/20 "
            "train/eval split (seed 0); 'calibration' is a stratified subset of the train split "
            "for quantization calibration, 'verification' a stratified subset of the eval split "
            "for comparing exported artifacts with PyTorch. Raw pixel values 0..16."
        ),
        "file": "digits.npz",
        "arrays": array_entries(arrays, roles),
        "layout": "NHWC",
        "preprocessing": {
            "scale": 1.0 / 16.0,
            "mean": [0.0],
            "std": [1.0],
            "resize": None,
            "layout": "NCHW",
        },
        "task": "classification",
        "num_classes": 10,
        "provenance": {
            "source": "sklearn.datasets.load_digits()",
            "packages": {"scikit-learn": version("scikit-learn"), "numpy": version("numpy")},
            "generator": SCRIPT,
            "seed": SEED,
            "split": {
                "method": "sklearn.model_selection.train_test_split(stratify=labels)",
                "test_fraction": DIGITS_TEST_FRACTION,
                "calibration": f"{DIGITS_CALIBRATION} stratified from train",
                "verification": f"{DIGITS_VERIFICATION} stratified from eval",
            },
        },
    }


def crop_boxes(height: int, width: int) -> list[tuple[int, int, int]]:
    """Deterministic square crops ``(top, left, side)`` at several scales and positions."""
    boxes = []
    for side in PHOTO_CROP_SIDES:
        side = min(side, height, width)
        for fy, fx in PHOTO_CROP_ANCHORS:
            boxes.append((round(fy * (height - side)), round(fx * (width - side)), side))
    return boxes


def photo_crops(image: np.ndarray) -> list[np.ndarray]:
    """Crop ``image`` (HWC uint8) at every box and resize each crop to PHOTO_SIZE (bilinear)."""
    from PIL import Image

    pil = Image.fromarray(image)
    out = []
    for top, left, side in crop_boxes(*image.shape[:2]):
        crop = pil.crop((left, top, left + side, top + side))
        resized = crop.resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BILINEAR)
        out.append(np.asarray(resized, dtype=np.uint8))
    return out


def source_images(with_skimage: bool) -> list[tuple[str, np.ndarray, str]]:
    """``(name, HWC uint8 RGB image, sha256 or origin)`` for every source photo, in fixed order.

    skimage images are opt-in: adding them only when skimage happens to be importable would make
    the shipped set depend on the machine that regenerates it.
    """
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    sources = []
    for filename, image in zip(bunch.filenames, bunch.images):
        digest = hashlib.sha256(Path(filename).read_bytes()).hexdigest()
        sources.append((Path(filename).name, image, f"sha256:{digest}"))
    if with_skimage:
        import skimage.data  # optional dependency, only when explicitly asked for

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            sources.append((f"skimage.data.{name}", getattr(skimage.data, name)(), "skimage.data"))
    return sources


def photos_arrays(sources: Sequence[tuple[str, np.ndarray, str]]) -> dict[str, np.ndarray]:
    """Crops of all sources; every PHOTO_VERIFICATION_EVERY-th crop is held out for verification."""
    crops = np.stack([c for _, image, _ in sources for c in photo_crops(image)])
    is_verif = np.arange(len(crops)) % PHOTO_VERIFICATION_EVERY == PHOTO_VERIFICATION_EVERY - 1
    calibration, verification = crops[~is_verif], crops[is_verif]
    assert_disjoint(calibration, verification)
    return {"calibration": calibration, "verification": verification}


def photos_manifest(
    arrays: Mapping[str, np.ndarray], sources: Sequence[tuple[str, np.ndarray, str]]
) -> dict[str, Any]:
    """Manifest of the photos set."""
    packages = {"scikit-learn": version("scikit-learn"), "pillow": version("pillow"),
                "numpy": version("numpy")}
    if any(origin == "skimage.data" for _, _, origin in sources):
        packages["scikit-image"] = version("scikit-image")
    return {
        "name": "photos",
        "description": (
            f"Real photos for calibrating ImageNet-style models: square crops at "
            f"{len(PHOTO_CROP_SIDES)} scales x {len(PHOTO_CROP_ANCHORS)} positions of each source "
            f"image, resized to {PHOTO_SIZE}x{PHOTO_SIZE} (PIL bilinear), RGB uint8. Every "
            f"{PHOTO_VERIFICATION_EVERY}th crop is held out as 'verification'."
        ),
        "file": "photos.npz",
        "arrays": array_entries(arrays, {"calibration": "calibration",
                                         "verification": "verification"}),
        "layout": "NHWC",
        "preprocessing": {
            "scale": 1.0 / 255.0,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "resize": None,  # samples are stored at the model input size already
            "layout": "NCHW",
        },
        "task": "images",
        "provenance": {
            "source": "sklearn.datasets.load_sample_images()",
            "images": [{"name": name, "shape": list(img.shape), "origin": origin}
                       for name, img, origin in sources],
            "packages": packages,
            "generator": SCRIPT,
            "seed": SEED,  # unused: crop positions are a fixed grid, recorded for uniformity
            "crops": {"sides": list(PHOTO_CROP_SIDES),
                      "anchors_yx": [list(a) for a in PHOTO_CROP_ANCHORS],
                      "resize": [PHOTO_SIZE, PHOTO_SIZE], "resample": "PIL.BILINEAR"},
        },
    }


def build_digits(out_dir: Path) -> Path:
    """Write ``out_dir/digits/{digits.npz,manifest.json}``; return the set folder."""
    arrays = digits_arrays()
    manifest = digits_manifest(arrays)
    return _write_set(out_dir, manifest, arrays, compress=True)


def build_photos(out_dir: Path, with_skimage: bool = False) -> Path:
    """Write ``out_dir/photos/{photos.npz,manifest.json}``; return the set folder."""
    sources = source_images(with_skimage)
    arrays = photos_arrays(sources)
    manifest = photos_manifest(arrays, sources)
    return _write_set(out_dir, manifest, arrays, compress=True)


def _write_set(out_dir: Path, manifest: dict, arrays: Mapping[str, np.ndarray],
               compress: bool) -> Path:
    set_dir = Path(out_dir) / manifest["name"]
    set_dir.mkdir(parents=True, exist_ok=True)
    save_npz(set_dir / manifest["file"], arrays, compress=compress)
    write_manifest(set_dir / "manifest.json", manifest)
    return set_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="parent folder of the set folders")
    parser.add_argument("--only", choices=SET_NAMES, action="append",
                        help="build only this set (repeatable); default: all")
    parser.add_argument("--with-skimage", action="store_true",
                        help="also crop skimage.data images (needs scikit-image; changes the set)")
    args = parser.parse_args(argv)
    names = args.only or list(SET_NAMES)
    if "digits" in names:
        print(build_digits(args.out))
    if "photos" in names:
        print(build_photos(args.out, with_skimage=args.with_skimage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
