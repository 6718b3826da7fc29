"""Tensor specs: the names, shapes and dtypes of a model's inputs and outputs."""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgekit.errors import InputSpecError

_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w.\-/]*):(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?$")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``layout`` is a hint (``NCHW``) for 4-D image tensors."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.layout:
            out["layout"] = self.layout
        return out

    @classmethod
    def from_json(cls, data: dict) -> TensorSpec:
        """The inverse of :meth:`to_json` (a manifest's ``inputs`` / ``outputs`` entries)."""
        return cls(data["name"], tuple(data["shape"]), data.get("dtype", "float32"), data.get("layout"))


def takes_tokens(dtypes) -> bool:
    """Whether a model with inputs of these dtypes takes integer (token) inputs: transformers get
    their own quantization schemes and search space."""
    return any(not dtype.startswith("float") for dtype in dtypes)


def default_layout(shape: tuple[int, ...], dtype: str) -> str | None:
    """PyTorch image tensors are NCHW; other ranks have no layout to convert."""
    return "NCHW" if len(shape) == 4 and dtype.startswith("float") else None


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``NAME:1x3x224x224[:dtype]`` as given to ``--input``."""
    match = _SPEC.match(text.strip())
    if not match:
        raise InputSpecError(f"bad --input {text!r}", "use NAME:DIMxDIM...[:dtype], e.g. input:1x3x224x224:float32")
    dtype = match["dtype"] or "float32"
    if dtype not in _DTYPES:
        raise InputSpecError(f"bad dtype {dtype!r} in --input {text!r}", f"use one of {', '.join(_DTYPES)}")
    shape = tuple(int(d) for d in match["shape"].split("x"))
    if any(d < 1 for d in shape):
        raise InputSpecError(f"--input {text!r} has a zero dimension", "every dimension must be >= 1 (static shapes)")
    return TensorSpec(match["name"], shape, dtype, default_layout(shape, dtype))
