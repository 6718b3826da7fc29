"""User calibration folders: .npy stacks, .npz keyed by input name, images; the held-out split."""
from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.calibration import IMAGENET, load_folder, load_named
from edgekit.errors import CalibrationError
from edgekit.paths import calibration_dir
from edgekit.tensors import TensorSpec

RGB = [TensorSpec("pixels", (1, 3, 32, 32), "float32", "NCHW")]


def test_image_folder_gets_imagenet_preprocessing_and_a_holdout(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    cal = load_folder(tmp_path, RGB)
    assert cal.calibration["pixels"].shape == (6, 1, 3, 32, 32) and cal.verification["pixels"].shape == (2, 1, 3, 32, 32)
    # a white image maps to (1 - mean) / std per channel
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(tmp_path / "white.png")
    white = load_folder(tmp_path, RGB).verification["pixels"][-1, 0, :, 0, 0]
    expected = (1 - np.asarray(IMAGENET["mean"])) / np.asarray(IMAGENET["std"])
    assert np.allclose(white, expected, atol=1e-5)


def test_npz_samples_keyed_by_input_name(tmp_path):
    specs = [TensorSpec("a", (1, 4), "float32"), TensorSpec("b", (1, 2), "int64")]
    for i in range(4):
        np.savez(tmp_path / f"s{i}.npz", a=np.full((1, 4), i, np.float32), b=np.full((1, 2), i, np.int64))
    cal = load_folder(tmp_path, specs)
    assert cal.calibration["a"][:, 0, 0].tolist() == [0, 1, 2] and cal.verification["b"].dtype == np.int64
    np.savez(tmp_path / "bad.npz", a=np.zeros((1, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"lacks input\(s\) \['b'\]"):
        load_folder(tmp_path, specs)


def test_bundled_digits_set_is_preprocessed_once():
    cal = load_named("digits", [TensorSpec("input", (1, 1, 8, 8), "float32", "NCHW")])
    assert cal.calibration["input"].shape == (128, 1, 1, 8, 8) and cal.eval_labels.shape == (360,)
    assert 0.0 <= cal.eval["input"].min() and cal.eval["input"].max() <= 1.0  # raw 0..16 scaled by 1/16


def _count_tokens(calls: list[int]):
    """A tokenize_text hook recording how many sentences each call tokenizes."""
    def tokenize(sentences: list[str]) -> dict[str, np.ndarray]:
        calls.append(len(sentences))
        lengths = np.array([min(len(s.split()), 8) for s in sentences])
        mask = (np.arange(8)[None, :] < lengths[:, None]).astype(np.int64)
        return {"input_ids": mask[:, None, :] * 7, "attention_mask": mask[:, None, :]}
    return tokenize


def test_text_train_split_is_tokenized_only_when_asked():
    calls: list[int] = []
    specs = [TensorSpec("input_ids", (1, 8), "int64"), TensorSpec("attention_mask", (1, 8), "int64")]
    cal = load_named("text", specs, tokenize=_count_tokens(calls))
    assert calls == [320, 32, 64]  # calibration, verification, heldout: not the large train split
    train = cal.train_samples()
    assert len(calls) == 4 and calls[3] > 50_000 and train["input_ids"].shape == (calls[3], 1, 8)
    assert cal.train_samples() is train and len(calls) == 4  # made once


def test_unreadable_text_train_file_is_a_clear_error(tmp_path):
    import shutil

    shutil.copytree(calibration_dir() / "text", tmp_path / "text")
    (tmp_path / "text" / "train.jsonl.gz").write_bytes(b"not gzip")
    specs = [TensorSpec("input_ids", (1, 8), "int64"), TensorSpec("attention_mask", (1, 8), "int64")]
    with pytest.raises(CalibrationError, match="unreadable") as info:
        load_folder(tmp_path / "text", specs, tokenize=_count_tokens([]))
    assert "regenerate" in info.value.hint


class _Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


ONE = [TensorSpec("input", (1, 1, 8, 8), "float32", "NCHW")]
SAMPLES = np.random.default_rng(0).random((4, 1, 1, 8, 8)).astype(np.float32)


def _with_nan(folder: Path) -> None:
    data = SAMPLES.copy()
    data[2, 0, 0, 3, 3] = np.nan
    np.save(folder / "a.npy", data)


def _manifest(**fields) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        np.savez(folder / "set.npz", calibration=np.zeros((4, 8, 8, 1), np.uint8))
        (folder / "manifest.json").write_text(json.dumps(fields))
    return write


BAD_CALIBRATION = {  # (what the folder holds, the one-line message)
    "text file as .npy": (lambda d: (d / "a.npy").write_text("0.1 0.2 0.3"),
                          "calibration file a.npy is not a .npy/.npz file (only unpickling could read it; edgekit never unpickles)"),
    "pickle as .npy": (lambda d: (d / "a.npy").write_bytes(pickle.dumps(_Payload(d / "ran"))),
                       "calibration file a.npy is not a .npy/.npz file"),
    "object array .npy": (lambda d: np.save(d / "a.npy", np.array([_Payload(d / "ran"), 1], dtype=object), allow_pickle=True),
                          "calibration file a.npy holds object arrays, which only unpickling could read"),
    "object array in .npz": (lambda d: np.savez(d / "a.npz", input=np.array([_Payload(d / "ran")], dtype=object)),
                             "calibration file a.npz holds object arrays"),
    "string dtype": (lambda d: np.save(d / "a.npy", np.full((4, 1, 1, 8, 8), "0.5")),
                     "calibration data a.npy has dtype <U3, not numbers"),
    "NaN": (_with_nan, "calibration data a.npy holds 1 NaN/Inf value(s)"),
    "Inf in .npz": (lambda d: np.savez(d / "a.npz", input=np.full(SAMPLES.shape, np.inf, np.float32)),
                    "calibration data a.npz[input] holds 256 NaN/Inf value(s)"),
    "not a zip .npz": (lambda d: (d / "a.npz").write_bytes(b"PK\x03\x04 truncated"),
                       "calibration file a.npz is not a readable .npy/.npz file"),
    "not an image": (lambda d: (d / "a.png").write_bytes(b"GIF89a not really"), "calibration file a.png is not a readable image"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text("{"), "manifest.json is not readable JSON"),
    "manifest without file": (_manifest(name="mine", preprocessing={}), "manifest.json: missing key 'file'"),
    "manifest without name": (_manifest(file="set.npz", preprocessing={}), "manifest.json: missing key 'name'"),
    "manifest without preprocessing": (_manifest(name="mine", file="set.npz"), "manifest.json: missing key 'preprocessing'"),
    "manifest with a zero std": (_manifest(name="mine", file="set.npz", preprocessing={"std": [0]}),
                                 "manifest.json: preprocessing.std.0: Input should be greater than 0"),
    "manifest with a typo": (_manifest(name="mine", file="set.npz", preprocessing={"sclae": 0.5}),
                             "manifest.json: preprocessing.sclae: Unexpected keyword argument"),
    "manifest naming a missing file": (_manifest(name="mine", file="other.npz", preprocessing={}),
                                       "manifest.json: data file 'other.npz' does not exist"),
    "manifest leaving the folder": (_manifest(name="mine", file="../set.npz", preprocessing={}),
                                    "manifest.json: data file '../set.npz' is outside the set's folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALIBRATION))
def test_bad_calibration_data_is_one_line(case, tmp_path):
    make, message = BAD_CALIBRATION[case]
    folder = tmp_path / "calib"
    folder.mkdir()
    make(folder)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(CalibrationError) as info:
        load_folder(folder, ONE)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing ran (no 'ran' marker), nothing written


def test_npy_content_under_an_npz_name_is_one_array(tmp_path):
    np.save(tmp_path / "a.npy", SAMPLES)
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    assert np.array_equal(load_folder(tmp_path, ONE).calibration["input"], SAMPLES[:3])


def test_the_payload_runs_when_unpickled(tmp_path):
    """So the marker checks above can fail: unpickling these bytes does run the command."""
    pickle.loads(pickle.dumps(_Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()
