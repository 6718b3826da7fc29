"""Fixtures for the quantizer tests: the tiny encoder of tests/tiny_models.py exported once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekit.quantize.onnx_rewrites import dedupe_value_names

from tiny_models import TinyEncoder, export, ort_outputs, token_samples

torch.set_num_threads(1)


def _export(tmp: Path, name: str, normalize: bool) -> Path:
    raw = tmp / f"{name}_raw.onnx"
    export(TinyEncoder(normalize), raw)  # output "embedding": the exporter's duplicate-name bug
    path = tmp / f"{name}.onnx"
    onnx.save(dedupe_value_names(onnx.load(str(raw))), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_raw_and_fixed(tmp_path_factory) -> tuple[Path, Path]:
    """(as exported, with duplicate names fixed) ONNX files of the tiny encoder."""
    path = _export(tmp_path_factory.mktemp("tiny"), "tiny", normalize=False)
    return path.with_name("tiny_raw.onnx"), path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_raw_and_fixed) -> Path:
    """The tiny encoder (mean pooling, Gemm head) as a valid ONNX file."""
    return tiny_raw_and_fixed[1]


@pytest.fixture(scope="session")
def tiny_normalized_onnx(tmp_path_factory) -> Path:
    """The tiny encoder ending in F.normalize(dim=1) (ONNX ReduceL2)."""
    return _export(tmp_path_factory.mktemp("tiny_norm"), "tiny_norm", normalize=True)


@pytest.fixture(scope="session")
def calibration() -> dict[str, np.ndarray]:
    return token_samples(64, seed=0)


@pytest.fixture(scope="session")
def heldout() -> dict[str, np.ndarray]:
    return token_samples(32, seed=1)


@pytest.fixture(scope="session")
def tiny_reference(tiny_onnx, heldout) -> np.ndarray:
    return ort_outputs(tiny_onnx, heldout)
