"""The bundled digits example: shipped weights load, are accurate, and the helpers work."""
from __future__ import annotations

import pytest
import torch

from edgekit.examples.digits import model as digits_model
from edgekit.examples.digits.train import evaluate, load_split, train


@pytest.fixture
def one_thread():
    """Tiny-batch training on one thread: several threads under CPU contention are ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shipped() -> torch.nn.Module:
    return digits_model.load_model()


def test_weights_are_a_plain_state_dict() -> None:
    state = torch.load(digits_model.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert set(state) == set(digits_model.DigitsCNN().state_dict())
    # BatchNorm's step counter is the one integer entry
    assert all(v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32) for k, v in state.items())


def test_shipped_model_is_in_eval_mode_with_expected_size(shipped: torch.nn.Module) -> None:
    assert not shipped.training
    n_params = sum(p.numel() for p in shipped.parameters())
    assert 80_000 <= n_params <= 120_000, n_params
    widest = max(m.out_channels for m in shipped.modules() if isinstance(m, torch.nn.Conv2d))
    assert widest >= 32  # wide enough for channel pruning to be meaningful


def test_output_shape(shipped: torch.nn.Module) -> None:
    (x,) = digits_model.example_inputs()
    assert x.shape == (1, 1, 8, 8) and x.dtype == torch.float32
    with torch.no_grad():
        assert shipped(x).shape == (1, 10)
        assert shipped(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_test_accuracy_at_least_97_percent(shipped: torch.nn.Module) -> None:
    x, y = load_split("eval")
    assert x.shape == (360, 1, 8, 8) and y.shape == (360,)
    accuracy = evaluate(shipped, x, y)
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f}"


def test_factory_and_module_description() -> None:
    model, inputs = digits_model.factory()
    assert isinstance(model, digits_model.DigitsCNN) and not model.training
    assert [t.shape for t in inputs] == [torch.Size([1, 1, 8, 8])]
    assert digits_model.INPUT_NAMES == ["input"] and digits_model.OUTPUT_NAMES == ["logits"]
    assert digits_model.CALIBRATION == "digits" and digits_model.TASK == "classification"


def test_train_is_deterministic_and_learns(one_thread: None) -> None:
    """A short run (reused by fine-tuning code) gives identical weights twice and beats chance."""
    x, y = load_split("train")
    x, y = x[:400], y[:400]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train(digits_model.DigitsCNN(), x, y, epochs=8, lr=5e-3, seed=0, batch_size=16))
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)
    assert not runs[0].training
    assert evaluate(runs[0], x, y) > 0.5
