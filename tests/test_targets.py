"""Every bundled profile loads, is validated, and drives the build as data."""
from __future__ import annotations

import dataclasses
import json

import pytest
from pydantic import ValidationError

from edgekit.errors import TargetError
from edgekit.paths import targets_dir
from edgekit.targets import Budget, Device, IODtype, Precision, list_targets, load_target, parse_target

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


# (edit of rpi4.toml, the one-line message): each names the key path and what it must be
BAD_PROFILES = {
    "threads zero": (lambda s: s.replace("threads = 4", "threads = 0", 1), "tflite.threads must be >= 1, got 0"),
    "threads a word": (lambda s: s.replace("threads = 4", 'threads = "four"', 1),
                       "tflite.threads must be an integer, got 'four'"),
    "threads a numeric string": (lambda s: s.replace("threads = 4", 'threads = "4"', 1),
                                 "tflite.threads must be an integer, got '4'"),
    "precisions a string": (lambda s: s.replace('precisions = ["fp32", "int8"]', 'precisions = "fp32"', 1),
                            "tflite.precisions must be a list, got 'fp32'"),
    "unknown precision": (lambda s: s.replace('precisions = ["fp32", "int8"]', 'precisions = ["fp32", "int9"]', 1),
                          "tflite.precisions[1] must be one of 'fp32', 'fp16', 'int8'"),
    "min_cosine a word": (lambda s: s.replace("min_cosine = 0.99\n", 'min_cosine = "high"\n', 1),
                          "tolerance.int8.min_cosine must be a number, got 'high'"),
    "min_cosine above 1": (lambda s: s.replace("min_cosine = 0.99\n", "min_cosine = 1.5\n", 1),
                           "tolerance.int8.min_cosine must be <= 1"),
    "device not a table": (lambda s: s.replace("[device]", 'device = "pi"\n[unused]'), "device must be a table, got 'pi'"),
    "negative tolerance": (lambda s: s.replace("max_rel_err = 0.15", "max_rel_err = -1", 1),
                           "tolerance.int8.max_rel_err must be >= 0"),
    "cores a float": (lambda s: s.replace("cores = 4", "cores = 4.0"), "device.cores must be an integer, got 4.0"),
    "flag an integer": (lambda s: s.replace("enabled = true", "enabled = 1", 1), "tflite.enabled must be true or false, got 1"),
    "unknown delegate": (lambda s: s.replace('delegate = "xnnpack"', 'delegate = "xnpack"'),
                         "tflite.delegate must be 'xnnpack', 'nnapi', 'gpu' or 'none', got 'xnpack'"),
    "unknown arch": (lambda s: s.replace('arch = "aarch64"', 'arch = "arm"'), "device.arch must be 'aarch64' or 'x86_64'"),
    "budget out of range": (lambda s: s + "\n[budget]\nmin_cosine = 2.0\n", "budget.min_cosine must be <= 1"),
    "reduce_range a word": (lambda s: s.replace("[ort.int8]", '[ort.int8]\nreduce_range = "yes"'),
                            "ort.int8.reduce_range must be true or false, got 'yes'"),
    "unknown key": (lambda s: s.replace("[device]", "[device]\nwings = 2"), "device: unknown key(s) ['wings']"),
    "unknown tolerance key": (lambda s: s.replace("[tolerance.int8]", "[tolerance.int8]\nmax_err = 1"),
                              "tolerance.int8: unknown key(s) ['max_err']"),
    "unknown io dtype": (lambda s: s.replace('io_dtype = "int8"', 'io_dtype = "int3"'),
                         "tflite.int8.io_dtype must be one of 'float32', 'int8' or 'uint8', got 'int3'"),
    "unknown tolerance table": (lambda s: s.replace("[tolerance.int8]", "[tolerance.int2]"), "tolerance.int2 must be one of"),
    "missing name": (lambda s: s.replace("name = ", "nom = "), "missing required key 'name'"),
    "bad TOML": (lambda s: s + "\n[[[", "not valid TOML"),
    "no runtime": (lambda s: s.replace("enabled = true", "enabled = false"), "enables no runtime"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_invalid_profiles_are_refused(tmp_path, case):
    edit, message = BAD_PROFILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(edit((targets_dir() / "rpi4.toml").read_text()))
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text and "pydantic" not in text and "errors.pydantic.dev" not in text


def test_every_error_is_counted_but_one_is_shown(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text((targets_dir() / "rpi4.toml").read_text().replace("threads = 4", 'threads = "four"'))
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    assert info.value.problem.endswith("tflite.threads must be an integer, got 'four'")
    assert info.value.hint == "fix the value in the profile; 1 more problem(s) after this one"  # ort.threads too


def test_new_fields_default_and_parse(tmp_path):
    rpi4 = load_target("rpi4")
    assert rpi4.device.arch == "aarch64" and load_target("host").device.arch == "x86_64"
    assert rpi4.budget == Budget(max_top1_drop_pp=1.0, min_cosine=0.98, max_ppl_increase_pct=5.0)
    assert rpi4.ort.int8.full_range_features == () and rpi4.ort.int8.reduce_range is False
    text = (targets_dir() / "host.toml").read_text().replace('arch = "x86_64"\n', "")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("full_range_features"))
    text = text.replace("[ort.int8]", '[ort.int8]\nfull_range_features = ["avx512_vnni", "avx_vnni"]\nreduce_range = true')
    path = tmp_path / "board.toml"
    path.write_text(text + "\n[budget]\nmax_top1_drop_pp = 0.5\nmin_cosine = 1\n")
    board = load_target(str(path))
    assert board.device.arch == "x86_64"  # derived from isa x86-64-v3
    assert board.ort.int8.full_range_features == ("avx512_vnni", "avx_vnni") and board.ort.int8.reduce_range is True
    assert board.budget == Budget(max_top1_drop_pp=0.5, min_cosine=1.0, max_ppl_increase_pct=5.0)
    assert Device(cpu="Cortex-A53", isa="armv8.0-a", cores=4, memory_mb=1024).arch == "aarch64"


def test_profile_as_json_and_replaced():
    profile = load_target("nnapi")
    data = json.loads(json.dumps(dataclasses.asdict(profile), default=str))
    assert data["ort"]["int8"]["activation_type"] == "uint8" and data["device"]["arch"] == "aarch64"
    assert data["tolerance"]["int8"]["min_cosine"] == 0.99 and data["budget"]["min_cosine"] == 0.98
    fp32_only = dataclasses.replace(profile, tflite=dataclasses.replace(profile.tflite, precisions=(Precision.FP32,)))
    assert fp32_only.tflite.precisions == (Precision.FP32,) and fp32_only.tolerance_for("int8") == profile.tolerance_for("int8")
    with pytest.raises(ValidationError):  # replace() validates too
        dataclasses.replace(profile.tflite, threads=0)


def test_unknown_target_names_the_choices():
    with pytest.raises(TargetError) as info:
        load_target("toaster")
    assert "rpi4" in str(info.value) and "toaster" in str(info.value)


def test_missing_required_key():
    with pytest.raises(TargetError, match="missing required key 'device'"):
        parse_target({"name": "x", "description": "y"}, "inline")
