"""targets/ and calibration_data/ are found from a checkout and from an installed wheel."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.paths import calibration_dir, targets_dir

REPO = Path(__file__).resolve().parent.parent


def test_checkout_finds_data_folders():
    assert targets_dir() == REPO / "targets"
    assert (calibration_dir() / "digits" / "manifest.json").is_file()


@pytest.mark.slow
def test_installed_wheel_finds_targets(tmp_path, edgekit_wheel):
    wheel = edgekit_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("data/share/edgekit/targets/rpi4.toml") for n in names)
    assert any(n.endswith("data/share/edgekit/calibration_data/digits/digits.npz") for n in names)
    assert any(n.endswith("edgekit/runner/edgekit_runner.py") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    # edgekit.targets needs only the standard library and pydantic (borrowed from this env, no index here),
    # so this bare venv can load every profile
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for name in ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions"):
        origin = Path(importlib.util.find_spec(name).origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (borrowed / source.name).symlink_to(source)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "borrowed.pth").write_text(f"{borrowed}\n")
    code = "from edgekit.targets import list_targets, load_target; print(sorted(load_target(n).name for n in list_targets()))"
    out = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['arm64', 'host', 'nnapi', 'rpi4']"
