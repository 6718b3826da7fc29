"""A recipe file: ``[[compress]]`` steps and, optionally, profile tables.

``edgekit search`` writes its choice as one (``chosen.toml``): the profile tables a trial changed
and the compression steps it ran, so ``edgekit build --recipe chosen.toml`` rebuilds it. This is
the one place that tells the two parts apart; the profile loader takes the tables
(:func:`edgekit.targets.load_target`), the recipe parser the steps (:mod:`edgekit.compress.recipe`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def split_recipe(doc: dict[str, Any]) -> tuple[dict[str, Any], list | None]:
    """A recipe file (``edgekit search``'s ``chosen.toml``) as its profile overlay and its
    compression steps: ``[[compress]]`` is an array of step tables, while a profile's own
    ``[compress]`` is one table (``channel_multiple``), which stays in the overlay."""
    steps = doc.get("compress")
    if not isinstance(steps, list):
        return doc, None
    return {k: v for k, v in doc.items() if k != "compress"}, steps


def overlays_profile(path: Path) -> bool:
    """Whether the TOML file ``path`` holds profile tables besides its ``[[compress]]`` steps."""
    return bool(split_recipe(_read(path))[0])


def has_steps(path: Path) -> bool:
    """Whether the TOML file ``path`` holds ``[[compress]]`` steps."""
    return split_recipe(_read(path))[1] is not None


def _read(path: Path) -> dict[str, Any]:
    from edgekit.targets import read_toml

    return read_toml(path, "recipe")
