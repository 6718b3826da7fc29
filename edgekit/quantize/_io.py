"""Shared plumbing for the quantization modules: model in, file out."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


def load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """A ModelProto from a path or the proto itself (not copied)."""
    import onnx  # lazily: the build imports this module with its stages

    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def prepare_output(output: str | Path) -> Path:
    """The output path, with its folder created."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def quant_type(name: str):  # -> onnxruntime.quantization.QuantType
    """``"int8"`` / ``"uint8"`` -> ORT's QuantType (imported lazily)."""
    from onnxruntime.quantization import QuantType

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if name not in types:
        raise ValueError(f"quantization type must be one of {sorted(types)}, not {name!r}")
    return types[name]


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``{name: array [N, *shape]}``:
    yields ``{name: array[i]}`` for each sample ``i`` (edgekit's convention: one static-batch
    tensor per sample; int64 token tensors stay int64). Every ORT static quantizer uses it."""

    def __init__(self, samples: dict[str, np.ndarray]) -> None:
        counts = {len(v) for v in samples.values()}
        if len(counts) != 1:
            raise ValueError(f"inputs have different sample counts: {sorted(counts)}")
        self._samples = samples
        self._count = counts.pop()
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._count:
            return None
        row = {name: np.ascontiguousarray(values[self._next]) for name, values in self._samples.items()}
        self._next += 1
        return row

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return self._count
