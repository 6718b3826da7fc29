from __future__ import annotations

import pytest
import torch

from edgekit.compress.data import Task, TrainData, iterate_minibatches, seeded_generator
from edgekit.compress.errors import RecipeError


def test_task_is_inferred_from_labels() -> None:
    x = torch.zeros(4, 3)
    assert TrainData(x, torch.tensor([0, 1, 2, 3])).resolved_task is Task.CLASSIFICATION
    assert TrainData(x, torch.zeros(4, 2)).resolved_task is Task.REGRESSION
    assert TrainData.from_calibration(x).resolved_task is Task.EMBEDDING
    assert TrainData(x, torch.zeros(4), task="classification").resolved_task is Task.CLASSIFICATION


def test_eval_split_falls_back_to_training_split() -> None:
    x, y = torch.zeros(4, 3), torch.arange(4)
    assert TrainData(x, y).eval_split()[0] is x
    xe = torch.ones(2, 3)
    assert TrainData(x, y, xe, torch.arange(2)).eval_split()[0] is xe
    assert TrainData(x, y).example_inputs()[0].shape == (1, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"x_train": torch.zeros(4, 3), "y_train": torch.zeros(3)}, "y_train has 3 samples but x_train has 4"),
    ({"x_train": torch.zeros(0, 3)}, "x_train must be a non-empty tensor"),
    ({"x_train": torch.zeros(4, 3), "y_eval": torch.zeros(2)}, "y_eval but no x_eval"),
    ({"x_train": torch.zeros(4, 3), "batch_size": 0}, "batch_size must be >= 1"),
])
def test_bad_data_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        TrainData(**kwargs)


def test_minibatches_are_seeded_and_cover_every_sample_once() -> None:
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    first = list(iterate_minibatches(x, y, 4, seeded_generator(3)))
    again = list(iterate_minibatches(x, y, 4, seeded_generator(3)))
    assert [len(b[0]) for b in first] == [4, 4, 2]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(10))
    assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in first)  # pairs stay aligned
    assert next(iterate_minibatches(x, None, 4, seeded_generator(0)))[1] is None


def test_token_batches_group_similar_lengths_and_cover_every_sample_once() -> None:
    # 960 sequences of real length 1..64 in random order, padded to 64
    lengths = torch.randint(1, 65, (960,), generator=seeded_generator(0))
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    ids = torch.arange(960)[:, None].expand(960, 64) * mask
    batches = list(iterate_minibatches((ids, mask), None, 32, seeded_generator(1), trim_padding=1))
    seen = torch.cat([xb[0][:, 0] for xb, _ in batches])
    assert sorted(seen.tolist()) == list(range(960))
    # padding left after trimming: bucketed batches vs random batches trimmed the same way
    padded = sum(xb[1].numel() - int(xb[1].sum()) for xb, _ in batches)
    plain = sum(int(lengths[idx].max()) * len(idx) - int(lengths[idx].sum())
                for idx in torch.randperm(960, generator=seeded_generator(2)).split(32))
    assert padded < 0.1 * plain
    assert all(torch.equal(xb[1].sum(1), lengths[xb[0][:, 0]]) for xb, _ in batches)  # rows stay aligned
