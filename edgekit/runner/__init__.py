"""The standalone device runner.

`edgekit_runner.py` is copied verbatim into every bundle and onto devices, so it must stay
self-contained (standard library, numpy and one runtime). This package only makes it importable
as ``edgekit.runner.edgekit_runner`` for the ``edgekit-runner`` console script and for
`edgekit build`, which copies :data:`RUNNER_PATH` into the bundle.
"""
from __future__ import annotations

from pathlib import Path

RUNNER_PATH: Path = Path(__file__).with_name("edgekit_runner.py")

__all__ = ["RUNNER_PATH"]
