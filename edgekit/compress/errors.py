"""Errors raised by the compression library.

Every invalid option is rejected with :class:`RecipeError` *before* any work starts, so a
build never spends minutes fine-tuning only to fail on a typo. Messages always say what is
wrong and how to fix it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import EdgekitError, MissingDependencyError

__all__ = ["MissingDependencyError", "RecipeError", "require"]


class RecipeError(EdgekitError, ValueError):
    """A compression recipe or one of its options is invalid (message says how to fix it).

    An EdgekitError, so the CLI prints it as one line and exits non-zero."""


def require(module: str, pip_name: str, purpose: str) -> ModuleType:
    """Import an optional heavy dependency, naming the pip package when it is missing.

    Heavy libraries are imported lazily (inside the function that uses them) so that
    ``import edgekit.compress`` stays cheap and works without them.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{pip_name}' package, which is not installed; "
            f"run `pip install {pip_name}`"
        ) from exc
