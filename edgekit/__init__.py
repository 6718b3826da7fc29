"""edgekit: from a trained PyTorch model to verified TFLite and ONNX Runtime mobile bundles.

The public API is small on purpose::

    from edgekit import build, BuildOptions, load_target
    manifest = build(BuildOptions(target="rpi4"))

Importing edgekit is cheap: torch, TensorFlow and onnxruntime are imported only by the stage
that needs them.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BuildOptions",
    "EdgekitError",
    "TargetProfile",
    "build",
    "inspect_model",
    "list_targets",
    "load_target",
]

# Lazy attribute table: name -> module. Keeps `import edgekit` free of heavy imports.
_LAZY = {
    "BuildOptions": "edgekit.options",
    "EdgekitError": "edgekit.errors",
    "TargetProfile": "edgekit.targets",
    "load_target": "edgekit.targets",
    "list_targets": "edgekit.targets",
    "build": "edgekit.pipeline",
    "inspect_model": "edgekit.inspect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
