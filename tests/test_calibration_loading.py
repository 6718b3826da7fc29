"""User calibration folders: .npy stacks, .npz keyed by input name, images; the held-out split."""
from __future__ import annotations

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
