"""Every bundled profile loads, is validated, and drives the build as data."""
from __future__ import annotations

import dataclasses

import pytest

from edgekit.errors import TargetError
from edgekit.paths import targets_dir
from edgekit.targets import IODtype, Precision, list_targets, load_target, parse_target

REQUIRED = {"rpi4", "arm64", "nnapi", "host"}


def test_required_targets_exist():
    assert REQUIRED <= set(list_targets())


@pytest.mark.parametrize("name", sorted(p.stem for p in targets_dir().glob("*.toml")))
def test_every_profile_loads_and_is_frozen(name):
    profile = load_target(name)
    assert profile.name == name
    assert profile.device.cores >= 1 and profile.device.memory_mb > 0
    assert profile.tflite.enabled or profile.ort.enabled
    for precision in (*profile.tflite.precisions, *profile.ort.precisions):
        assert profile.tolerance_for(precision).min_cosine is not None, f"{name}: no tolerance for {precision}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "other"


def test_schemes_differ_where_the_runtimes_do():
    assert load_target("nnapi").ort.int8.activation_type == IODtype.UINT8
    assert load_target("host").ort.int8.activation_type == IODtype.UINT8
    assert load_target("rpi4").ort.int8.activation_type == IODtype.INT8
    assert load_target("rpi4").tflite.int8.io_dtype == IODtype.INT8
    assert Precision.FP16 in load_target("arm64").tflite.precisions


def test_profile_by_path(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text((targets_dir() / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "my-board"'))
    assert load_target(str(path)).name == "my-board"


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("threads = 4", "threads = 0", 1), "threads must be >= 1"),
    (lambda s: s.replace("[device]", "[device]\nwings = 2"), "unknown key(s) ['wings']"),
    (lambda s: s.replace('io_dtype = "int8"', 'io_dtype = "int3"'), "int3"),
    (lambda s: s.replace("[tolerance.int8]", "[tolerance.int2]"), "int2"),
    (lambda s: s.replace("name = ", "nom = "), "missing required key 'name'"),
    (lambda s: s + "\n[[[", "not valid TOML"),
])
def test_invalid_profiles_are_refused(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit((targets_dir() / "rpi4.toml").read_text()))
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    assert message in str(info.value)


def test_unknown_target_names_the_choices():
    with pytest.raises(TargetError) as info:
        load_target("toaster")
    assert "rpi4" in str(info.value) and "toaster" in str(info.value)


def test_missing_required_key():
    with pytest.raises(TargetError, match="missing required key 'device'"):
        parse_target({"name": "x", "description": "y"}, "inline")
