from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import recipe as rc
from edgekit.compress.data import TrainData
from edgekit.compress.distill import StudentSource
from edgekit.compress.errors import RecipeError
from edgekit.compress.lowrank import RankRule
from edgekit.compress.pruning import PruneKind
from edgekit.compress.recipe import Method, Recipe

from .conftest import TinyCNN


def test_cli_shorthand() -> None:
    r = Recipe.from_cli(["share=auto", "prune=structured:0.3,round_to=8,ignored_layers=fc+head",
                         "lowrank=ratio:0.5", "distill=epochs=3,student=depth", "qat=epochs=1"])
    assert [s.method for s in r.steps] == list(rc.ORDER)
    share, prune, low, dist, q = (s.options for s in r.steps)
    assert share.auto is True
    assert (prune.kind, prune.ratio, prune.round_to, prune.ignored_layers) == (
        PruneKind.STRUCTURED, 0.3, 8, ("fc", "head"))
    assert (low.rule, low.value) == (RankRule.RATIO, 0.5)
    assert (dist.epochs, dist.student) == (3, StudentSource.DEPTH)
    assert q.epochs == 1
    assert Recipe.from_cli(["prune=unstructured:0.8"]).steps[0].options.kind is PruneKind.UNSTRUCTURED
    assert Recipe.from_cli(["lowrank=energy:0.9"]).steps[0].options.rule is RankRule.ENERGY
    assert Recipe.from_cli(["share=embed.weight:lm_head.weight"]).steps[0].options.pairs == (
        ("embed.weight", "lm_head.weight"),)


def test_toml(tmp_path) -> None:
    text = """
[[compress]]
method = "prune"
kind = "structured"
ratio = 0.3
finetune_epochs = 2

[[compress]]
method = "lowrank"
energy = 0.9

[[compress]]
method = "share"
pairs = [["embed.weight", "lm_head.weight"]]
auto = false
"""
    with pytest.raises(RecipeError, match="'share' is listed after 'lowrank'"):
        Recipe.from_toml(text)
    path = tmp_path / "edgekit.toml"
    path.write_text(text.replace('method = "share"', 'method = "qat"').replace(
        'pairs = [["embed.weight", "lm_head.weight"]]\nauto = false', "epochs = 2"))
    r = Recipe.from_toml(path)
    assert [s.method for s in r.steps] == [Method.PRUNE, Method.LOWRANK, Method.QAT]
    assert r.steps[0].options.finetune_epochs == 2
    assert (r.steps[1].options.rule, r.steps[1].options.value) == (RankRule.ENERGY, 0.9)
    assert r.steps[2].options.epochs == 2


@pytest.mark.parametrize("items, message", [
    (["quantize=int8"], "unknown compression method 'quantize'; known methods: share, prune, lowrank, distill, qat"),
    (["prune=structured:1.5"], r"prune: ratio=1.5 is out of range; give a fraction in \(0, 1\)"),
    (["prune=unstructured:0"], "prune: ratio=0 is out of range"),
    (["lowrank=energy:1.2"], r"lowrank: energy=1.2 is out of range; give a fraction in \(0, 1\)"),
    (["lowrank=ratio:0"], "lowrank: ratio=0 is out of range"),
    (["distill=epochs=0"], "distill: epochs=0 must be >= 1"),
    (["qat=epochs=0"], "qat: epochs=0 must be >= 1"),
    (["qat=epochs=1", "prune=structured:0.3"],
     "qat must be the last step \\(it must see the final weights\\), but 'prune' comes after it"),
    (["qat=epochs=1", "distill=epochs=2"], "'distill' comes after it; move 'distill' before qat"),
    (["lowrank=energy:0.9", "prune=structured:0.3"], "fixed order share -> prune -> lowrank -> distill -> qat"),
    (["prune=structured:0.3", "prune=unstructured:0.5"], "recipe lists 'prune' twice; merge them"),
    (["prune=structured:0.3,colour=red"], "prune: unknown option\\(s\\) colour; valid options: "),
    (["prune"], "compress shorthand 'prune' has no settings"),
    (["prune=structured:0.3:9"], "prune: cannot read 'structured:0.3:9'"),
    (["prune=pyramid:0.3"], "prune: kind='pyramid' is not one of"),
    (["prune=structured:half"], "^prune: ratio='half' must be a number, e.g. ratio=0.5$"),
    (["prune=structured:0.5,steps=2.5"], "^prune: steps=2.5 must be an integer, e.g. steps=1$"),
    (["prune=structured:0.5,finetune_epochs=true"], "^prune: finetune_epochs=True must be an integer"),
    (["lowrank=energy:most"], "^lowrank: value='most' must be a number"),
    (["distill=epochs=1,dropout=yes"], "^distill: dropout='yes' must be true or false, e.g. dropout=true$"),
])
def test_bad_cli_recipes(items: list[str], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.from_cli(items)


def test_bad_toml() -> None:
    with pytest.raises(RecipeError, match="has \\[compress\\] where steps are \\[\\[compress\\]\\] tables"):
        Recipe.from_toml("[compress]\nmethod = 'prune'\n")
    # no steps: a profile overlay (edgekit search's chosen.toml), which the profile schema judges
    assert Recipe.from_toml("[build]\ntarget = 'rpi4'\n").steps == () and Recipe.from_toml("# nothing\n").steps == ()
    with pytest.raises(RecipeError, match="recipe TOML is invalid"):
        Recipe.from_toml("[[compress]\n")
    with pytest.raises(RecipeError, match="has no 'method'"):
        Recipe.from_toml("[[compress]]\nratio = 0.3\n")
    with pytest.raises(RecipeError, match="lowrank: give either energy=... or rule/value"):
        Recipe.from_toml("[[compress]]\nmethod='lowrank'\nenergy=0.9\nvalue=0.5\n")
    with pytest.raises(RecipeError, match="^prune: ratio='half' must be a number, e.g. ratio=0.5$"):
        Recipe.from_toml("[[compress]]\nmethod='prune'\nkind='structured'\nratio='half'\n")
    with pytest.raises(RecipeError, match="^prune: round_to='8' must be an integer"):
        Recipe.from_toml("[[compress]]\nmethod='prune'\nratio=0.5\nround_to='8'\n")


def test_optional_numbers_may_be_none() -> None:
    step = Recipe.from_dicts([{"method": "prune", "kind": "structured", "ratio": 0.5, "round_to": None}]).steps[0]
    assert step.options.round_to is None and step.options.ratio == 0.5


def test_validate_needs_data_and_linear_layers(digits: TrainData) -> None:
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(RecipeError, match="lowrank needs nn.Linear or 1x1 Conv2d layers; this model has none"):
        rc.validate(Recipe.from_cli(["lowrank=energy:0.9"]), conv_only, digits)
    with pytest.raises(RecipeError, match="distill needs data"):
        rc.validate(Recipe.from_cli(["distill=epochs=2"]), TinyCNN(), None)
    with pytest.raises(RecipeError, match="qat needs data"):
        rc.validate(Recipe.from_cli(["qat=epochs=1"]), TinyCNN(), None)


def test_run_validates_before_any_work(monkeypatch, digits: TrainData) -> None:
    def boom(*_a, **_k):
        raise AssertionError("pruning ran before the recipe was validated")

    monkeypatch.setattr(rc.pruning, "apply", boom)
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Unflatten(1, (4, 36)))
    with pytest.raises(RecipeError, match="lowrank needs nn.Linear"):
        rc.run(Recipe.from_cli(["prune=unstructured:0.5", "lowrank=energy:0.9"]), conv_only, digits)


def test_run_end_to_end(trained_cnn: TinyCNN, digits: TrainData) -> None:
    recipe = Recipe.from_cli(["prune=structured:0.5,finetune_epochs=2", "distill=epochs=2,lr=3e-3",
                              "qat=epochs=1"])
    model, reports = rc.run(recipe, trained_cnn, digits)
    assert [r.method for r in reports] == ["original", "prune", "distill", "qat"]
    original, pruned, distilled, quantized = reports
    assert original.cosine == pytest.approx(1.0) and original.accuracy > 0.95
    assert pruned.params < 0.3 * original.params and pruned.macs < 0.3 * original.macs
    assert pruned.settings["kind"] == "structured" and pruned.settings["ratio"] == 0.5
    assert distilled.cosine > pruned.cosine + 0.05  # the student moved towards the teacher
    assert distilled.accuracy > 0.93 and quantized.accuracy > 0.93
    assert quantized.details["top1_fake_quant"] == pytest.approx(quantized.accuracy)
    assert quantized.cosine > 0.85
    assert set(quantized.to_dict()) == {"method", "settings", "params", "macs", "accuracy", "cosine",
                                        "sparsity", "seconds", "details"}
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_run_share_and_lowrank_without_data() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))
    with torch.no_grad():
        model[4].weight.copy_(model[4].weight[:, :1] @ model[4].weight[:1, :])  # rank 1
    out, reports = rc.run(Recipe.from_cli(["share=auto", "lowrank=energy:0.99"]), model)
    assert reports[-1].accuracy is None and reports[-1].cosine is None and reports[-1].macs is None
    assert reports[-1].details["layers"]["4"]["rank"] == 1
    assert reports[-1].params < reports[0].params


def test_training_after_unstructured_pruning_keeps_the_zeros(trained_cnn: TinyCNN, digits: TrainData) -> None:
    small = TrainData(digits.x_train[:256], digits.y_train[:256], digits.x_eval, digits.y_eval)
    recipe = Recipe.from_cli(["prune=unstructured:0.7", "distill=epochs=1", "qat=epochs=1"])
    _, reports = rc.run(recipe, trained_cnn, small)
    assert [round(r.sparsity, 3) for r in reports] == [0.0, 0.7, 0.7, 0.7]
