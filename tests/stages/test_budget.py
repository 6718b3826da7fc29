"""The quality budget: compression judged against the original model, before any conversion."""
from __future__ import annotations

import json
import math

import pytest
from test_cli import assert_one_line_error, edgekit

from edgekit.budget import MaxDrop, Metric, describe, judge
from edgekit.errors import MaxDropError, QualityBudgetError
from edgekit.targets import load_target


@pytest.mark.parametrize("text, metric, bound", [
    ("2pp", Metric.TOP1_DROP, 2.0), ("2", Metric.TOP1_DROP, 2.0), (" 0.5PP ", Metric.TOP1_DROP, 0.5),
    ("cos:0.99", Metric.COSINE, 0.99), ("ppl:5%", Metric.PPL_INCREASE, 5.0), ("ppl:7.5", Metric.PPL_INCREASE, 7.5),
])
def test_max_drop_syntax(text, metric, bound):
    parsed = MaxDrop.parse(text)
    assert (parsed.metric, parsed.bound) == (metric, bound)
    assert MaxDrop.parse(str(parsed)) == parsed  # what error hints print reads back


@pytest.mark.parametrize("text", ["two", "cos:", "ppl:x%", "-1", "cos:1.5", "nan", "2%"])
def test_bad_max_drop_values_are_refused(text):
    with pytest.raises(MaxDropError, match="--max-drop"):
        MaxDrop.parse(text)


def test_profiles_carry_the_default_budget():
    budget = load_target("rpi4").budget
    assert (budget.max_top1_drop_pp, budget.min_cosine, budget.max_ppl_increase_pct) == (1.0, 0.98, 5.0)


def test_a_profile_budget_table_is_read_and_checked(tmp_path):
    import tomllib

    from edgekit.errors import TargetError
    from edgekit.paths import targets_dir
    from edgekit.targets import parse_target

    data = tomllib.loads((targets_dir() / "rpi4.toml").read_text())
    assert parse_target({**data, "budget": {"max_top1_drop_pp": 0.25}}, "x.toml").budget.max_top1_drop_pp == 0.25
    with pytest.raises(TargetError, match=r"x.toml: budget: unknown key\(s\) \['max_drop'\]"):
        parse_target({**data, "budget": {"max_drop": 2}}, "x.toml")


def _steps(*accuracies: float) -> list[dict]:
    methods = ["original", "share", "prune", "distill"][:len(accuracies)]
    settings = {"prune": {"kind": "structured", "ratio": 0.5, "finetune_epochs": 0}, "distill": {"epochs": 2}}
    return [{"method": m, "settings": settings.get(m, {}), "accuracy": a, "cosine": 0.9} for m, a in zip(methods, accuracies)]


def test_judge_records_figure_bound_and_verdict_per_step():
    steps = _steps(0.99, 0.985, 0.982)
    judge(steps, Metric.TOP1_DROP, 1.0, "rpi4 profile budget")
    assert "budget" not in steps[0]
    assert steps[1]["budget"] == {"metric": "top1_drop_pp", "figure": 0.5, "bound": 1.0, "passed": True,
                                  "source": "rpi4 profile budget"}
    assert steps[2]["budget"]["figure"] == 0.8 and steps[2]["budget"]["passed"]
    assert describe(steps[2]["budget"]) == "top1_drop_pp 0.8 against the original, <= 1 (rpi4 profile budget)"


def test_judge_names_the_step_from_which_the_budget_stayed_broken():
    steps = _steps(0.99, 0.99, 0.5, 0.49)
    with pytest.raises(QualityBudgetError) as caught:
        judge(steps, Metric.TOP1_DROP, 1.0, "rpi4 profile budget")
    message = str(caught.value)
    assert caught.value.exit_code == 4 and "\n" not in message
    assert message.startswith("compression step prune (kind=structured, ratio=0.5, finetune_epochs=0) broke")
    assert "top-1 50.00 % vs 99.00 % for the original, a drop of 49.00 pp > 1 pp (rpi4 profile budget)" in message
    assert "raise finetune_epochs (now 0), lower ratio (now 0.5)" in message and "--max-drop 49pp" in message
    assert [s["budget"]["passed"] for s in steps[1:]] == [True, False, False]


def test_a_later_step_may_recover_the_budget():
    steps = _steps(0.99, 0.99, 0.5, 0.985)  # distillation wins back what pruning lost
    judge(steps, Metric.TOP1_DROP, 1.0, "rpi4 profile budget")
    assert [s["budget"]["passed"] for s in steps[1:]] == [True, False, True]


def test_non_finite_outputs_never_pass():
    steps = [{"method": "original", "settings": {}, "cosine": 1.0},
             {"method": "lowrank", "settings": {"rule": "energy", "value": 0.5, "finetune_epochs": 0}, "cosine": math.nan}]
    with pytest.raises(QualityBudgetError, match="lowrank .* output cosine to the original nan < 0.98") as caught:
        judge(steps, Metric.COSINE, 0.98, "rpi4 profile budget")
    assert "--max-drop" not in str(caught.value)  # no bound accepts NaN


@pytest.mark.parametrize("value", ["two", "cos:1.5", "-1"])
def test_bad_max_drop_on_the_command_line(value, tmp_path):
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5", "--max-drop", value,
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "--max-drop")
    assert "loading the model" not in result.stderr and not (tmp_path / "out").exists()


def test_max_drop_without_compression_is_refused(tmp_path):
    result = edgekit("build", "--target", "rpi4", "--max-drop", "2pp", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "--max-drop 2pp bounds what compression costs, but this build compresses nothing")
    assert not any(tmp_path.iterdir())


def test_max_drop_for_another_metric_is_refused_before_training(tmp_path):
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5", "--max-drop", "cos:0.9",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "bounds cosine, but this model is judged by top1_drop_pp", "--max-drop 2pp")
    assert "training:" not in result.stderr and "finetune_epochs=20" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_pruning_without_finetuning_fails_the_budget_before_conversion(tmp_path):
    """GUIDE section 2: 99.72 % -> 16.94 % top-1 used to exit 0."""
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5,finetune_epochs=0",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 4
    assert_one_line_error(result, "compression step prune (kind=structured, ratio=0.5, finetune_epochs=0)",
                          "top-1 16.94 % vs 99.72 % for the original, a drop of 82.78 pp > 1 pp (rpi4 profile budget)",
                          "raise finetune_epochs (now 0)", "--max-drop 82.8pp")
    assert "exporting to ONNX" not in result.stderr
    assert not any(tmp_path.iterdir())  # no bundle, no staging folder


@pytest.mark.slow
def test_default_finetuning_recovers_structured_pruning_within_budget(tmp_path):
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5", "--latency-runs", "0",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prune: finetune_epochs=20 by default (the model comes with training data" in result.stderr
    prune = json.loads((tmp_path / "out" / "manifest.json").read_text())["compression"][1]
    assert prune["settings"]["finetune_epochs"] == 20 and prune["defaulted"] == ["finetune_epochs"]
    assert len(prune["details"]["finetune_loss"]) == 20
    budget = prune["budget"]
    assert budget["metric"] == "top1_drop_pp" and budget["bound"] == 1.0 and budget["source"] == "rpi4 profile budget"
    assert budget["passed"] and budget["figure"] <= budget["bound"]  # measured: 0 pp (99.72 % kept; labels alone 0.28 pp)
    assert "budget: top1_drop_pp" in result.stderr and "<= 1 (rpi4 profile budget): kept" in result.stderr
    assert prune["accuracy"] >= 0.99


@pytest.mark.slow
def test_max_drop_lets_a_broken_model_through_and_says_so(tmp_path):
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5,finetune_epochs=0", "--max-drop", "90",
                     "--latency-runs", "0", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    budget = manifest["compression"][1]["budget"]
    assert budget == {"metric": "top1_drop_pp", "figure": pytest.approx(82.78, abs=0.01), "bound": 90.0,
                      "passed": True, "source": "--max-drop 90pp"}
    assert "defaulted" not in manifest["compression"][1]  # finetune_epochs=0 was the user's choice
    assert manifest["accuracy"]["reference"] == pytest.approx(0.1694, abs=1e-3)


def test_language_models_are_judged_by_perplexity_on_the_eval_windows():
    from types import SimpleNamespace

    import torch

    from edgekit.budget import budget_metric
    from edgekit.compress import TrainData
    from edgekit.compress.metrics import perplexity
    from edgekit.verify import metrics

    torch.manual_seed(0)
    lm = torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16))
    tokens = torch.randint(0, 16, (6, 10))
    data = TrainData(tokens, x_eval=tokens)
    assert budget_metric(SimpleNamespace(task="lm"), data) is Metric.PPL_INCREASE
    assert budget_metric(SimpleNamespace(task="embedding"), data) is Metric.COSINE
    with torch.no_grad():
        expected = metrics.causal_lm_perplexity(lm(tokens).numpy(), tokens.numpy())
    assert perplexity(lm, data) == pytest.approx(expected, rel=1e-9) and 1 < expected < 100
    steps = [{"method": "original", "settings": {}, "perplexity": 20.0},
             {"method": "qat", "settings": {"epochs": 1}, "perplexity": 21.5}]
    with pytest.raises(QualityBudgetError, match=r"qat \(epochs=1\) .* perplexity 21.500 vs 20.000 .* \+7.50 % > 5 %"):
        judge(steps, Metric.PPL_INCREASE, 5.0, "rpi4 profile budget")
    assert "--max-drop ppl:7.5%" in str(pytest.raises(QualityBudgetError, judge, steps, Metric.PPL_INCREASE, 5.0, "x").value)


def test_allow_drift_keeps_a_broken_compression_recorded_and_exits_4(tmp_path):
    """What a search's held-out rebuild needs: the budget is reported, not a stop (the bundle is
    written, ``budget.passed`` is false, and the exit code still says so)."""
    result = edgekit("build", "--target", "rpi4", "--prune", "structured:0.5,finetune_epochs=0", "--allow-drift",
                     "--latency-runs", "0", "--verify-on", "none", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "broke the quality budget" in result.stderr and "kept (--allow-drift)" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    budget = manifest["compression"][1]["budget"]
    assert budget["passed"] is False and budget["figure"] == pytest.approx(82.78, abs=0.01) and budget["bound"] == 1.0
