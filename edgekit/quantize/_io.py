"""Shared plumbing for the quantization modules: model in, file out."""
from __future__ import annotations

from pathlib import Path

import onnx


def load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """A ModelProto from a path or the proto itself (not copied)."""
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
