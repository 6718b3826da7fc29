"""Fixtures for the text tests: tiny transformers exported once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekit.quantize.onnx_rewrites import dedupe_value_names

from .tiny_models import TinyEncoder, export, token_samples

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def text_subset(tmp_path_factory):
    """``text_subset(every) -> folder``: the bundled text set with only every ``every``-th row of
    its large train file (same calibration/verification/heldout splits), for builds that distil
    in test time. Folders are made once per session."""
    import gzip
    import json
    import shutil

    from edgekit.paths import calibration_dir
    from edgekit.text import read_rows

    source = calibration_dir() / "text"
    manifest = json.loads((source / "manifest.json").read_text())
    made: dict[int, Path] = {}

    def make(every: int) -> Path:
        if every not in made:
            folder = tmp_path_factory.mktemp(f"text-every-{every}")
            shutil.copy(source / manifest["file"], folder / manifest["file"])
            extra = read_rows(source, {"file": manifest["extra_files"][0]})[::every]
            (folder / "subset.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in extra).encode()))
            rows = read_rows(folder, {"file": manifest["file"], "extra_files": ["subset.jsonl.gz"]})
            splits = {k: sum(r["split"] == k for r in rows) for k in manifest["splits"]}
            (folder / "manifest.json").write_text(json.dumps({**manifest, "extra_files": ["subset.jsonl.gz"],
                                                              "splits": splits}))
            made[every] = folder
        return made[every]

    return make


def ort_outputs(path: Path | str, samples: dict[str, np.ndarray]) -> np.ndarray:
    """Run every sample through onnxruntime (1 thread): ``[N, *output_shape]``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    count = len(next(iter(samples.values())))
    return np.stack([session.run(None, {k: v[i] for k, v in samples.items()})[0] for i in range(count)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two ``[N, ...]`` arrays."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


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
