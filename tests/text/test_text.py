"""edgekit.text: tokenization, LM metrics and the bundled ``text`` calibration set."""
from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import re

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


@pytest.fixture(scope="module")
def text_generator():
    """calibration_data/text/build_text_set.py imported (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("build_text_set", calibration_dir() / "text" / "build_text_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_train_rows() -> list[dict]:
    folder = calibration_dir() / "text"
    manifest = json.loads((folder / "manifest.json").read_text())
    return [json.loads(line) for line in gzip.decompress((folder / manifest["extra_files"][0]).read_bytes()).splitlines()]


def test_text_set_regenerates_byte_identically(text_generator, shipped_train_rows):
    """The generator's own functions rebuild sentences.jsonl byte for byte, the standard library's
    rows of train.jsonl.gz (which lead that file) byte for byte, and the manifest. The installed
    packages' train rows after those are not regenerated: parsing every docstring of torch,
    tensorflow, scipy ... took ~6 of this test's minutes (build_text_set.py --out DIR does it all)."""
    folder = calibration_dir() / "text"
    manifest = json.loads((folder / "manifest.json").read_text())
    candidates = text_generator.candidate_sentences()
    rows = text_generator.build_rows(list(candidates))
    assert text_generator.jsonl(rows).encode() == (folder / "sentences.jsonl").read_bytes()
    stdlib_rows = text_generator.extra_train_rows(rows, site_packages=False)
    assert len(stdlib_rows) > 5_000 and all(r["module"].startswith("stdlib/") for r in stdlib_rows)
    shipped = gzip.decompress((folder / manifest["extra_files"][0]).read_bytes())
    assert shipped.startswith(text_generator.jsonl(stdlib_rows).encode())
    assert shipped_train_rows[len(stdlib_rows)]["module"].startswith("site-packages/")  # all stdlib rows compared
    # the manifest of the regenerated rows and the shipped train rows; package versions: next test
    rebuilt = text_generator.manifest(rows, len(candidates), shipped_train_rows)
    rebuilt["provenance"]["packages"] = manifest["provenance"]["packages"]
    assert json.dumps(rebuilt, indent=2) + "\n" == (folder / "manifest.json").read_text()


def test_text_set_manifest_names_the_installed_package_versions(text_generator, shipped_train_rows):
    """The train file's packages (from its rows' modules) at the versions installed here: the
    project's install pins the releases the manifest records."""
    expected = json.loads((calibration_dir() / "text" / "manifest.json").read_text())["provenance"]["packages"]
    assert len(expected) >= 10
    changed = sorted(d for d, v in expected.items() if _version(d) != v)
    if changed:
        pytest.skip(f"train file not comparable: installed versions of {', '.join(changed)} differ from the manifest's")
    assert text_generator.package_versions(shipped_train_rows) == expected
