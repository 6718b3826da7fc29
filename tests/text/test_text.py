"""edgekit.text: tokenization, LM metrics and the bundled ``text`` calibration set."""
from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from edgekit.paths import calibration_dir
from edgekit.text import SPLITS, load_sentences, next_token_agreement, perplexity, split_sentences, tokenize


class FakeTokenizer:
    """Mimics a Hugging Face tokenizer call: word ids, [CLS]=1 ... [SEP]=2, padding with 0."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert (padding, truncation, return_tensors) == ("max_length", True, "np")
        ids = np.zeros((len(texts), max_length), np.int32)
        for row, text in enumerate(texts):
            tokens = [1] + [3 + len(w) for w in text.split()][: max_length - 2] + [2]
            ids[row, : len(tokens)] = tokens
        return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32), "token_type_ids": np.zeros_like(ids)}


def test_tokenize_gives_one_static_tensor_per_sample():
    out = tokenize(["a short one", "word " * 50], FakeTokenizer(), 16)
    assert sorted(out) == ["attention_mask", "input_ids"]
    for array in out.values():
        assert array.shape == (2, 1, 16) and array.dtype == np.int64
    assert out["attention_mask"][0, 0].tolist() == [1] * 5 + [0] * 11  # padded
    assert out["attention_mask"][1].sum() == 16  # truncated


def test_tokenize_token_type_ids_only_when_asked():
    assert "token_type_ids" in tokenize(["x y"], FakeTokenizer(), 8, token_type_ids=True)
    with pytest.raises(ValueError, match="no sentences"):
        tokenize([], FakeTokenizer(), 8)


def test_perplexity_of_uniform_and_certain_models():
    windows = np.random.default_rng(0).integers(0, 10, size=(3, 9))
    assert perplexity(lambda x: np.zeros((1, x.shape[1], 10)), windows) == pytest.approx(10.0)

    def oracle(x):  # puts all mass on the true next token
        window = next(w for w in windows if np.array_equal(w[:-1], x[0]))
        logits = np.full((1, 8, 10), -50.0)
        logits[0, np.arange(8), window[1:]] = 50.0
        return logits

    assert perplexity(oracle, windows) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[N, T \+ 1\]"):
        perplexity(oracle, np.zeros(5, np.int64))


def test_next_token_agreement():
    a = np.eye(4)[None]
    b = a.copy()
    b[0, 3] = [1, 0, 0, 0]
    assert next_token_agreement(a, a) == 1.0
    assert next_token_agreement(a, b) == 0.75
    with pytest.raises(ValueError, match="shapes differ"):
        next_token_agreement(a, a[:, :2])


def test_split_sentences_joins_lines_and_splits_on_capitals():
    text = "Return the value.  It is\ncached.\n\nSee also: e.g. this one. done"
    assert split_sentences(text) == ["Return the value.", "It is cached.", "See also: e.g. this one. done"]


def test_text_set_splits_are_disjoint_varied_and_small():
    folder = calibration_dir() / "text"
    manifest = json.loads((folder / "manifest.json").read_text())
    sentences = {split: load_sentences(split) for split in SPLITS}
    assert {k: len(v) for k, v in sentences.items()} == manifest["splits"]
    assert len(sentences["train"]) >= 50_000  # distilling an encoder needs tens of thousands
    every = [s for split in SPLITS for s in sentences[split]]
    assert len({s.lower() for s in every}) == len(every)  # deduplicated, so splits are disjoint
    assert all(8 <= len(s.split()) <= 40 for s in every)
    assert (folder / manifest["file"]).stat().st_size < 200_000
    assert sum((folder / f).stat().st_size for f in manifest["extra_files"]) < 4_000_000
    assert manifest["provenance"]["generator"] == "calibration_data/text/build_text_set.py"
    with pytest.raises(ValueError, match="unknown split"):
        load_sentences("test")


def test_train_sentences_share_no_six_word_run_with_evaluation_sentences():
    def runs(sentence: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[a-z0-9]+", sentence.lower())
        return {tuple(words[i:i + 6]) for i in range(len(words) - 5)}

    evaluated = set().union(*(runs(s) for split in ("heldout", "verification") for s in load_sentences(split)))
    assert len(evaluated) > 1000
    assert not [s for s in load_sentences("train") if runs(s) & evaluated]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.slow
def test_text_set_regenerates_byte_identically(tmp_path):
    folder = calibration_dir() / "text"
    subprocess.run([sys.executable, str(folder / "build_text_set.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    # sentences.jsonl depends on the Python version only; the train file also on the installed
    # packages the manifest names, which the project's install pins to the same releases here
    assert (tmp_path / "sentences.jsonl").read_bytes() == (folder / "sentences.jsonl").read_bytes()
    expected = manifest["provenance"]["packages"]
    changed = sorted(d for d, v in expected.items() if _version(d) != v)
    if changed:
        pytest.skip(f"train file not comparable: installed versions of {', '.join(changed)} differ from the manifest's")
    for name in ("manifest.json", *manifest["extra_files"]):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes()
