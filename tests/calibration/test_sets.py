"""The named calibration sets: manifests match their data, subsets are disjoint, and the
generator reproduces them exactly."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SETS_DIR = Path(__file__).resolve().parents[2] / "calibration_data"
SET_NAMES = ("digits", "photos")  # the sets build_sets.py owns (other sets live beside them)
ROLES = {"calibration", "verification", "eval", "train"}


def _build_sets() -> ModuleType:
    """Import calibration_data/build_sets.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("build_sets", SETS_DIR / "build_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _manifest(name: str) -> dict:
    return json.loads((SETS_DIR / name / "manifest.json").read_text(encoding="utf-8"))


def _arrays(folder: Path, manifest: dict) -> dict[str, np.ndarray]:
    with np.load(folder / manifest["file"], allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", SET_NAMES)
def test_manifest_fields(name: str) -> None:
    manifest = _manifest(name)
    assert manifest["name"] == name and manifest["layout"] == "NHWC"
    assert manifest["description"] and manifest["file"] == f"{name}.npz"
    pre = manifest["preprocessing"]
    assert set(pre) == {"scale", "mean", "std", "resize", "layout"} and pre["layout"] == "NCHW"
    assert len(pre["mean"]) == len(pre["std"])
    prov = manifest["provenance"]
    assert prov["generator"] == "calibration_data/build_sets.py" and prov["seed"] == 0
    assert "scikit-learn" in prov["packages"]
    for entry in manifest["arrays"]:
        role = entry["role"]
        assert role in ROLES or (role.startswith("labels_") and role[len("labels_"):] in ROLES), role


@pytest.mark.parametrize("name", SET_NAMES)
def test_manifest_arrays_match_the_npz(name: str) -> None:
    manifest = _manifest(name)
    arrays = _arrays(SETS_DIR / name, manifest)
    assert [e["key"] for e in manifest["arrays"]] == list(arrays)
    for entry in manifest["arrays"]:
        array = arrays[entry["key"]]
        assert list(array.shape) == entry["shape"] and str(array.dtype) == entry["dtype"], entry
        if not entry["role"].startswith("labels_"):
            channels = len(manifest["preprocessing"]["mean"])
            assert array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == channels


@pytest.mark.parametrize("name", SET_NAMES)
def test_calibration_and_verification_do_not_overlap(name: str) -> None:
    arrays = _arrays(SETS_DIR / name, _manifest(name))
    calibration = {sample.tobytes() for sample in arrays["calibration"]}
    assert not any(sample.tobytes() in calibration for sample in arrays["verification"])
    assert len(calibration) == len(arrays["calibration"])  # no duplicates inside either


def test_digits_splits() -> None:
    manifest = _manifest("digits")
    arrays = _arrays(SETS_DIR / "digits", manifest)
    assert manifest["task"] == "classification" and manifest["num_classes"] == 10
    assert manifest["preprocessing"]["scale"] == 1 / 16
    assert arrays["eval"].shape == (360, 8, 8, 1) and arrays["train"].shape == (1437, 8, 8, 1)
    assert arrays["calibration"].shape == (128, 8, 8, 1) and arrays["verification"].shape == (32, 8, 8, 1)
    assert max(a.max() for a in (arrays["train"], arrays["eval"])) == 16
    train = {s.tobytes() for s in arrays["train"]}
    assert not any(s.tobytes() in train for s in arrays["eval"])  # train/eval disjoint
    assert all(s.tobytes() in train for s in arrays["calibration"])  # calibration from train
    for split in ("calibration", "verification", "eval", "train"):
        assert set(np.unique(arrays[f"{split}_labels"])) == set(range(10)), split  # stratified


def test_photos_size_and_preprocessing() -> None:
    manifest = _manifest("photos")
    arrays = _arrays(SETS_DIR / "photos", manifest)
    assert manifest["task"] == "images"
    assert arrays["calibration"].shape == (24, 224, 224, 3) and arrays["verification"].shape == (8, 224, 224, 3)
    assert manifest["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert manifest["preprocessing"]["std"] == [0.229, 0.224, 0.225]
    assert (SETS_DIR / "photos" / "photos.npz").stat().st_size < 5_000_000


def test_regenerating_gives_identical_sets(tmp_path: Path) -> None:
    _build_sets().main(["--out", str(tmp_path)])
    for name in SET_NAMES:
        manifest = _manifest(name)
        assert json.loads((tmp_path / name / "manifest.json").read_text(encoding="utf-8")) == manifest
        shipped, rebuilt = _arrays(SETS_DIR / name, manifest), _arrays(tmp_path / name, manifest)
        assert list(shipped) == list(rebuilt)
        for key in shipped:
            np.testing.assert_array_equal(rebuilt[key], shipped[key], err_msg=f"{name}:{key}")


def test_npz_writer_is_byte_reproducible(tmp_path: Path) -> None:
    build_sets = _build_sets()
    arrays = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": np.ones(3, np.int64)}
    build_sets.save_npz(tmp_path / "one.npz", arrays)
    build_sets.save_npz(tmp_path / "two.npz", arrays)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["a"], arrays["a"])
