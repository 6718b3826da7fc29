"""User calibration folders: .npy stacks, .npz keyed by input name, images; the held-out split."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgekit.calibration import IMAGENET, load_folder, load_named
from edgekit.errors import CalibrationError
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
