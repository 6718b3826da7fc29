from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import pruning
from edgekit.compress.data import TrainData
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import count_params, evaluate_top1, sparsity_report
from edgekit.compress.pruning import PruneKind, PruneOptions, PruneScope

from .conftest import TinyCNN


def _small(data: TrainData, n: int = 512) -> TrainData:
    """A training subset, to keep fine-tuning tests fast."""
    return TrainData(data.x_train[:n], data.y_train[:n], data.x_eval, data.y_eval)


def test_unstructured_global_reaches_the_target_and_is_permanent(trained_cnn: TinyCNN) -> None:
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    pruned, rep = pruning.apply(trained_cnn, PruneOptions(kind="unstructured", ratio=0.8),
                                example_inputs=(torch.zeros(1, 1, 8, 8),))
    assert rep["sparsity"]["global"] == pytest.approx(0.8, abs=1e-4)
    assert sparsity_report(pruned)["global"] == pytest.approx(0.8, abs=1e-4)
    # Permanent: no reparametrization left, plain 'weight' parameters.
    assert not any(n.endswith("_orig") for n, _ in pruned.named_parameters())
    assert all(not m._forward_pre_hooks for m in pruned.modules())
    assert rep["params_after"] == rep["params_before"]  # same shapes, just zeros
    # Global scope: the threshold is shared, so layers end up with different sparsities.
    assert len({round(v, 2) for v in rep["sparsity"]["layers"].values()}) > 1
    for k, v in trained_cnn.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_unstructured_per_layer_prunes_each_layer_equally(trained_cnn: TinyCNN) -> None:
    pruned, rep = pruning.apply(trained_cnn, PruneOptions(kind="unstructured", ratio=0.5,
                                                          scope=PruneScope.LAYER),
                                example_inputs=(torch.zeros(1, 1, 8, 8),))
    for name, value in rep["sparsity"]["layers"].items():
        assert value == pytest.approx(0.5, abs=0.02), name


def test_unstructured_80_with_finetuning_keeps_accuracy(trained_cnn: TinyCNN, digits: TrainData) -> None:
    base = evaluate_top1(trained_cnn, digits.x_eval, digits.y_eval)
    opts = PruneOptions(kind="unstructured", ratio=0.8, steps=2, finetune_epochs=1)
    pruned, rep = pruning.apply(trained_cnn, opts, digits)
    assert rep["sparsity"]["global"] == pytest.approx(0.8, abs=1e-3)  # fine-tuning kept the zeros
    assert len(rep["finetune_loss"]) == 2
    assert evaluate_top1(pruned, digits.x_eval, digits.y_eval) >= base - 0.015


def test_structured_removes_channels_in_multiples(trained_cnn: TinyCNN, digits: TrainData) -> None:
    opts = PruneOptions(kind=PruneKind.STRUCTURED, ratio=0.5, round_to=4, finetune_epochs=4)
    pruned, rep = pruning.apply(trained_cnn, opts, digits)
    channels = pruning.per_layer_channels(pruned)
    assert channels == {"features.0": 8, "features.3": 16, "features.7": 16, "classifier": 10}
    assert pruned.features[1].num_features == 8  # BatchNorm followed its conv (DepGraph)
    assert rep["params_after"] == count_params(pruned) < 0.3 * rep["params_before"]
    assert rep["macs_after"] < 0.3 * rep["macs_before"]
    assert rep["sparsity"]["global"] == 0.0  # dense: nothing is zero, it is gone
    assert pruned(digits.x_eval[:3]).shape == (3, 10)
    assert evaluate_top1(pruned, digits.x_eval, digits.y_eval) >= 0.9


class Residual(nn.Module):
    """y = relu(conv2(relu(conv1(x))) + x): conv2's output channels are coupled to x's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)  # depthwise: in == out
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.conv2(torch.relu(self.conv1(h))) + h)
        return self.fc(self.dw(h).mean((2, 3)))


def test_structured_keeps_residual_and_depthwise_couplings_consistent() -> None:
    torch.manual_seed(0)
    pruned, _ = pruning.apply(Residual(), PruneOptions(ratio=0.5),
                              example_inputs=(torch.zeros(1, 1, 8, 8),))
    assert pruned.stem.out_channels == pruned.conv2.out_channels == pruned.dw.in_channels
    assert pruned.dw.groups == pruned.dw.out_channels == 8
    assert pruned.conv1.out_channels == 8
    assert pruned(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_default_ignored_layer_is_the_output_layer(trained_cnn: TinyCNN) -> None:
    assert pruning.output_layer(trained_cnn, (torch.zeros(1, 1, 8, 8),)) is trained_cnn.classifier


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, r"ratio=1.0 is out of range; give a fraction in \(0, 1\)"),
    ({"ratio": 0.0}, "ratio=0.0 is out of range"),
    ({"steps": 0}, "steps=0 must be >= 1"),
    ({"kind": "random"}, "kind='random' is not one of 'unstructured', 'structured'"),
    ({"kind": "unstructured", "round_to": 8}, "round_to only applies to structured pruning"),
    ({"round_to": 0}, "round_to=0 must be a channel count >= 1"),
    ({"finetune_epochs": -1}, "finetune_epochs=-1 must be a whole number >= 0"),
    ({"finetune_epochs": 2.5}, "finetune_epochs=2.5 must be a whole number"),
])
def test_bad_options_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        PruneOptions(**kwargs)


def test_unset_finetune_epochs_means_prune_only_in_the_library(trained_cnn: TinyCNN, digits: TrainData) -> None:
    """``None`` leaves the choice to the build (which fine-tunes when it has training data)."""
    assert PruneOptions().finetune_epochs is None
    _, report = pruning.apply(trained_cnn, PruneOptions(kind="unstructured", ratio=0.5), digits)
    assert report["finetune_loss"] == [] and report["options"]["finetune_epochs"] is None


def test_inputs_without_labels_finetune_against_the_unpruned_model(trained_cnn: TinyCNN,
                                                                  digits: TrainData) -> None:
    calib = TrainData.from_calibration(digits.x_train)
    opts = PruneOptions(kind=PruneKind.STRUCTURED, ratio=0.5, round_to=4)
    bare, _ = pruning.apply(trained_cnn, opts, calib)
    tuned, rep = pruning.apply(trained_cnn, PruneOptions(kind=PruneKind.STRUCTURED, ratio=0.5, round_to=4,
                                                         finetune_epochs=3), calib)
    assert len(rep["finetune_loss"]) == 3 and rep["finetune_loss"][-1] < rep["finetune_loss"][0]
    with torch.no_grad():
        ref = trained_cnn(digits.x_eval).argmax(1)
        agree = [float((m(digits.x_eval).argmax(1) == ref).float().mean()) for m in (bare, tuned)]
    assert agree[0] < 0.5 and agree[1] > 0.8, agree  # measured: 0.20 -> 0.86


def test_bad_context_is_rejected_before_work(trained_cnn: TinyCNN, digits: TrainData) -> None:
    with pytest.raises(RecipeError, match="finetune_epochs > 0 needs training data"):
        pruning.apply(trained_cnn, PruneOptions(finetune_epochs=1), None,
                      example_inputs=(torch.zeros(1, 1, 8, 8),))
    with pytest.raises(RecipeError, match="ignored layer 'head' is not a module"):
        pruning.apply(trained_cnn, PruneOptions(ignored_layers=("head",)), digits)
    with pytest.raises(RecipeError, match="structured pruning traces the model and needs example inputs"):
        pruning.apply(trained_cnn, PruneOptions())
    with pytest.raises(RecipeError, match="prune needs nn.Conv\\*/nn.Linear layers"):
        pruning.apply(nn.Sequential(nn.ReLU()), PruneOptions(kind="unstructured"), digits)


def test_missing_torch_pruning_names_the_package(monkeypatch, trained_cnn: TinyCNN) -> None:
    import sys

    from edgekit.compress.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # makes `import torch_pruning` fail
    with pytest.raises(MissingDependencyError, match="run `pip install torch-pruning`"):
        pruning.apply(trained_cnn, PruneOptions(), example_inputs=(torch.zeros(1, 1, 8, 8),))
