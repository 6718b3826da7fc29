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


def test_a_transformer_gets_the_token_space(tmp_path):
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
    int4 = [o["ort"] for o in overlays if o["ort"]["enabled"] and o["ort"]["token_precisions"] == ["int4"]]
    assert int4 and all(t["int4_block_size"] in (16, 32, 64, 128) for t in int4)
    (tmp_path / "int4.toml").write_text(to_toml({"tflite": {"enabled": False}, "ort": int4[0]}))
    assert load_target("rpi4", tmp_path / "int4.toml").ort.int4_block_size == int4[0]["int4_block_size"]


def test_a_trainable_model_gets_compression_steps_in_recipe_order(tmp_path):
    import tomllib

    from edgekit.compress import ORDER, Recipe

    rpi4 = load_target("rpi4")
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=5))
    overlays = [suggest(study.ask(), rpi4, ("conv_a", "conv_b"), trainable=True) for _ in range(24)]
    steps = [o["compress"] for o in overlays if "compress" in o]
    assert 0 < len(steps) < len(overlays)  # compression is a choice, "none" included
    methods = {s["method"] for step in steps for s in step}
    assert methods == {"prune", "lowrank", "distill", "qat"}
    for overlay in overlays:
        text = to_toml(overlay)
        assert tomllib.loads(text) == overlay  # [[compress]] tables survive the round trip
        path = tmp_path / "trial.toml"
        path.write_text(text)
        recipe = Recipe.from_toml(path)  # the same file is a valid recipe (empty without steps)
        assert [s.method for s in recipe.steps] == sorted((s.method for s in recipe.steps), key=ORDER.index)
        qat = [s for s in overlay.get("compress", []) if s["method"] == "qat"]
        if qat:  # QAT trains for the activation type the trial's runtime quantizes to
            signed = overlay["tflite"]["enabled"] or overlay["ort"]["int8"]["activation_type"] == "int8"
            assert qat[0]["activation_signed"] is signed
    assert not any("compress" in suggest(study.ask(), rpi4) for _ in range(8))  # no training data: no compression


def test_tflite_int8_trials_choose_a_scheme():
    rpi4 = load_target("rpi4")
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=2))
    tables = [o["tflite"] for o in (suggest(study.ask(), rpi4) for _ in range(30)) if o["tflite"]["enabled"]]
    schemes = {(t["int8"]["per_channel"], t["int8"]["io_dtype"]) for t in tables}
    assert schemes == {(True, "int8"), (False, "int8"), (True, "float32"), (False, "float32")}
    assert {t["int8"]["calibration_samples"] for t in tables} <= {16, 32, 64, 128}


def test_an_overlay_with_compression_steps_is_refused_and_a_recipe_overlays_the_profile(tmp_path):
    from edgekit.errors import UnsupportedError
    from edgekit.options import BuildOptions
    from edgekit.pipeline import _overlay, build

    chosen = tmp_path / "chosen.toml"
    chosen.write_text(to_toml({"tflite": {"enabled": False}, "compress": [{"method": "prune", "kind": "structured", "ratio": 0.5}]}))
    with pytest.raises(UnsupportedError, match=r"holds compression steps.*pass it as --recipe"):
        build(BuildOptions(target="rpi4", overlay=chosen, out=tmp_path / "b"))
    assert _overlay(BuildOptions(target="rpi4", recipe_file=chosen)) == chosen
    assert load_target("rpi4", chosen).tflite.enabled is False  # the steps are the recipe's, not the profile's
    plain = tmp_path / "plain.toml"
    plain.write_text(to_toml({"ort": {"enabled": False}}))
    with pytest.raises(UnsupportedError, match="both --overlay"):
        _overlay(BuildOptions(target="rpi4", recipe_file=chosen, overlay=plain))
    assert not (tmp_path / "b").exists()
