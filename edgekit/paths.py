"""Where edgekit finds its data folders (``targets/``, ``calibration_data/``).

They live at the repository root, beside the package, so an editable checkout uses them in
place. A wheel installs them under ``<prefix>/share/edgekit`` (setup.cfg ``data_files``).
``EDGEKIT_DATA_DIR`` overrides both, e.g. for a relocated install.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path


def _candidates(name: str) -> list[Path]:
    roots = []
    if os.environ.get("EDGEKIT_DATA_DIR"):
        roots.append(Path(os.environ["EDGEKIT_DATA_DIR"]))
    roots.append(Path(__file__).resolve().parent.parent)  # editable checkout
    roots.append(Path(sysconfig.get_path("data")) / "share" / "edgekit")  # installed wheel
    return [root / name for root in roots]


def data_dir(name: str) -> Path:
    """Return the first existing data folder called ``name``.

    Raises FileNotFoundError naming every place looked at, since a broken install is otherwise
    hard to diagnose.
    """
    return _first(name, "folder", Path.is_dir)


def targets_dir() -> Path:
    """The folder holding one ``<name>.toml`` profile per target."""
    return data_dir("targets")


def calibration_dir() -> Path:
    """The folder holding the named calibration sets."""
    return data_dir("calibration_data")


def data_file(name: str) -> Path:
    """Return the first existing data file called ``name`` (e.g. ``constraints.txt``), looked up
    like :func:`data_dir`; FileNotFoundError names every place looked at."""
    return _first(name, "file", Path.is_file)


def _first(name: str, kind: str, exists) -> Path:
    candidates = _candidates(name)
    for path in candidates:
        if exists(path):
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"edgekit data {kind} {name!r} not found (looked in {looked}); reinstall edgekit")
