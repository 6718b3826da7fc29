"""A recipe file: ``[[compress]]`` steps and, optionally, profile tables and a ``[build]`` table.

``edgekit search`` writes its choice as one (``chosen.toml``): the profile tables a trial changed,
the compression steps it ran and the build settings it ran with (``[build] threads``), so
``edgekit build --recipe chosen.toml`` rebuilds it byte for byte. This is the one place that
tells the parts apart; the profile loader takes the tables (:func:`edgekit.targets.load_target`),
the recipe parser the steps (:mod:`edgekit.compress.recipe`), the pipeline the build settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import UnsupportedError

#: the table of build settings (not a profile table: it describes the build host's run)
BUILD_TABLE = "build"


def split_recipe(doc: dict[str, Any]) -> tuple[dict[str, Any], list | None]:
    """A recipe file (``edgekit search``'s ``chosen.toml``) as its profile overlay and its
    compression steps: ``[[compress]]`` is an array of step tables, while a profile's own
    ``[compress]`` is one table (``channel_multiple``), which stays in the overlay. The
    ``[build]`` table is neither (:func:`build_threads`)."""
    tables = {k: v for k, v in doc.items() if k != BUILD_TABLE}
    steps = tables.get("compress")
    if not isinstance(steps, list):
        return tables, None
    return {k: v for k, v in tables.items() if k != "compress"}, steps


def build_threads(path: Path | None) -> int | None:
    """The ``[build] threads`` of the recipe file ``path`` (None: no file, or none given)."""
    if path is None or not Path(path).is_file():
        return None
    table = _read(Path(path)).get(BUILD_TABLE, {})
    unknown = sorted(set(table) - {"threads"}) if isinstance(table, dict) else ["(not a table)"]
    threads = table.get("threads") if isinstance(table, dict) else None
    if unknown or (threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1)):
        raise UnsupportedError(f"{path}: [build] takes only threads = N (N >= 1); found {table!r}",
                               "fix or remove the [build] table")
    return threads


def overlays_profile(path: Path) -> bool:
    """Whether the TOML file ``path`` holds profile tables besides its ``[[compress]]`` steps."""
    return bool(split_recipe(_read(path))[0])


def has_steps(path: Path) -> bool:
    """Whether the TOML file ``path`` holds ``[[compress]]`` steps."""
    return split_recipe(_read(path))[1] is not None


def _read(path: Path) -> dict[str, Any]:
    from edgekit.targets import read_toml

    return read_toml(path, "recipe")
