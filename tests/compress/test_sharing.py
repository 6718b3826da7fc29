from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import sharing
from edgekit.compress.errors import RecipeError
from edgekit.compress.metrics import count_params
from edgekit.compress.sharing import ShareOptions

VOCAB, DIM = 200, 32


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, DIM)
        self.body = nn.Linear(DIM, DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.body(self.embed(tokens))))


def test_tie_embedding_and_head_saves_bytes_everywhere() -> None:
    model = TinyLM()
    tokens = (torch.randint(0, VOCAB, (1, 8)),)
    tied, rep = sharing.apply(model, ShareOptions(pairs=(("embed.weight", "lm_head.weight"),), auto=False))
    assert tied.lm_head.weight is tied.embed.weight
    assert rep["bytes_saved"] == VOCAB * DIM * 4
    assert count_params(tied) == count_params(model) - VOCAB * DIM
    assert rep["state_dict_bytes_before"] - rep["state_dict_bytes_after"] >= VOCAB * DIM * 4
    before = sharing.onnx_initializer_stats(model, tokens)
    after = sharing.onnx_initializer_stats(tied, tokens)
    assert before["count"] - after["count"] == 1
    assert before["bytes"] - after["bytes"] == VOCAB * DIM * 4
    # Constant folding pre-transposes the MatMul weight: the tied copy comes back.
    assert sharing.onnx_initializer_stats(tied, tokens, constant_folding=True)["bytes"] == before["bytes"]
    assert rep["tied"] == [["embed.weight", "lm_head.weight"]]
    assert tied(tokens[0]).shape == (1, 8, VOCAB)


def test_auto_detects_identical_copies_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    with torch.no_grad():
        model[2].weight.copy_(model[0].weight)
        model[4].weight.copy_(model[0].weight + 1e-3)
    tied, rep = sharing.apply(model, ShareOptions())
    assert rep["tied"] == [["0.weight", "2.weight"]]  # biases are below min_numel
    assert tied[2].weight is tied[0].weight and tied[4].weight is not tied[0].weight
    loose, rep = sharing.apply(model, ShareOptions(atol=1e-2))
    assert len(rep["tied"]) == 2 and loose[4].weight is loose[0].weight
    x = torch.randn(3, 64)
    assert torch.allclose(tied(x), model(x))


@pytest.mark.parametrize("pairs, message", [
    ((("embed.weight", "head.weight"),), "'head.weight' is not a parameter of the model"),
    ((("embed.weight", "body.weight"),), r"cannot tie 'embed.weight' \(200, 32\) and 'body.weight' \(32, 32\)"),
])
def test_bad_pairs_are_rejected(pairs: tuple, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        sharing.apply(TinyLM(), ShareOptions(pairs=pairs))


def test_nothing_to_do_is_rejected() -> None:
    with pytest.raises(RecipeError, match="share: nothing to do"):
        ShareOptions(auto=False)
