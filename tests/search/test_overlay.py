"""Profile overlays (``--overlay``, ``chosen.toml``) and the search space read from a profile."""
from __future__ import annotations

import optuna
import pytest

from edgekit.errors import TargetError
from edgekit.search.space import int8_types, runtimes, suggest, tflite_precisions, to_toml
from edgekit.targets import load_target


def test_an_overlay_is_merged_and_validated_like_a_profile(tmp_path):
    overlay = tmp_path / "chosen.toml"
    overlay.write_text(to_toml({"tflite": {"enabled": False},
                                "ort": {"int8": {"calibrate_method": "Entropy", "calibration_samples": 32, "per_channel": False}}}))
    profile = load_target("rpi4", overlay)
    assert profile.ort.int8.calibrate_method == "Entropy" and profile.ort.int8.calibration_samples == 32
    assert profile.ort.int8.per_channel is False and profile.tflite.enabled is False
    assert profile.ort.int8.activation_type.value == "int8"  # untouched keys keep the profile's value
    assert profile.tflite.delegate_ops == load_target("rpi4").tflite.delegate_ops


def test_a_bad_overlay_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[ort.int8]\ncalibrate_method = "Median"\n')
    with pytest.raises(TargetError, match=r"ort\.int8\.calibrate_method must be"):
        load_target("rpi4", bad)
    with pytest.raises(TargetError, match="overlay file .* does not exist"):
        load_target("rpi4", tmp_path / "missing.toml")


def test_the_space_follows_the_profile():
    rpi4, nnapi, host = load_target("rpi4"), load_target("nnapi"), load_target("host")
    assert runtimes(rpi4) == ["ort", "tflite"] and tflite_precisions(rpi4) == ["int8"]
    assert tflite_precisions(host) == ["int8", "fp16"]
    assert int8_types(rpi4) == ["int8/int8", "uint8/int8", "uint8/uint8"]
    assert int8_types(nnapi) == ["uint8/uint8"]  # the NNAPI EP rejects int8 activations: its own pair only
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    overlays = [suggest(study.ask(), nnapi) for _ in range(8)]
    ort = [o["ort"]["int8"] for o in overlays if o["ort"].get("enabled")]
    assert ort and all((o["activation_type"], o["weight_type"]) == ("uint8", "uint8") for o in ort)


def test_a_transformer_gets_the_token_space():
    from edgekit.search.space import runtimes, suggest, token_precisions

    rpi4 = load_target("rpi4")
    assert runtimes(rpi4, token_inputs=True) == ["ort", "tflite"]
    assert sorted(token_precisions(rpi4, "ort")) == sorted(p.value for p in rpi4.ort.token_precisions if p.value != "fp32")
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=3))
    overlays = [suggest(study.ask(), rpi4, ("node_a",), token_inputs=True) for _ in range(12)]
    for overlay in overlays:
        (runtime,) = [name for name in ("ort", "tflite") if overlay[name]["enabled"]]
        assert len(overlay[runtime]["token_precisions"]) == 1 and "precisions" not in overlay[runtime]
        assert "float_nodes" not in (overlay[runtime].get("int8") or {})  # no per-layer float choice for transformers
    assert {o["ort"]["token_precisions"][0] for o in overlays if o["ort"]["enabled"]} >= {"int8_dynamic"}
