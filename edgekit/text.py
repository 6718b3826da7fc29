"""Text helpers for transformer models: offline text, tokenization and language-model metrics.

The metrics' math lives in ``edgekit.verify.metrics`` (``next_token_agreement`` is re-exported
here; ``perplexity`` scores a logits function on token windows with its ``token_nll``).

Everything here is numpy-only except ``tokenize``, which calls a Hugging Face tokenizer it is
given (edgekit never imports ``transformers`` itself here). Token inputs follow edgekit's
calibration convention: sample ``i`` is exactly one static batch-1 input tensor, so a
tokenized set is ``{name: int64 array [N, 1, seq_len]}``.
"""
from __future__ import annotations

import ast
import gzip
import json
import re
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.verify.metrics import next_token_agreement, token_nll

__all__ = ["SPLITS", "load_sentences", "next_token_agreement", "perplexity", "read_rows", "split_sentences",
           "stdlib_docstrings", "tokenize"]

SPLITS = ("calibration", "verification", "heldout", "train")
# Standard-library folders left out of the offline corpus: tests are full of doctest/fixture text,
# the others are GUI demos, vendored tools or data rather than prose.
_STDLIB_SKIP = frozenset({"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip",
                          "pydoc_data", "site-packages", "dist-packages", "__pycache__"})
# A sentence ends at . ! ? followed by whitespace and an upper-case letter; good enough for
# docstring prose and fully deterministic (no NLP model).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def stdlib_docstrings(root: Path | str | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(module_path, docstring)`` for the standard library's module, class and function
    docstrings, in a fixed order (sorted files, then source order).

    The source is parsed with ``ast``, never imported, so no module runs (some have import side
    effects). The text depends only on the Python version; callers record it as provenance.
    """
    base = Path(root or sysconfig.get_paths()["stdlib"])
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base)
        if set(rel.parts) & _STDLIB_SKIP or rel.parts[0].startswith("config-"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few files are deliberately invalid (bad-syntax fixtures)
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc:
                yield rel.as_posix(), doc


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: paragraphs are separated by blank lines, lines joined, runs of
    whitespace collapsed. Returns the stripped sentences in order."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        sentences.extend(s.strip() for s in _SENTENCE_END.split(flat) if s.strip())
    return sentences


def load_sentences(split: str, folder: Path | str | None = None) -> list[str]:
    """The sentences of one split (``calibration``, ``verification``, ``heldout``, ``train``) of the bundled
    text set (``calibration_data/text``) or of a folder with the same manifest layout."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if folder is None:
        from edgekit.paths import calibration_dir

        folder = calibration_dir() / "text"
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return [row["text"] for row in read_rows(folder, manifest) if row["split"] == split]


def read_rows(folder: Path, manifest: dict) -> list[dict]:
    """The ``{id, split, module, text}`` rows of a text set: ``manifest["file"]`` and then its
    ``extra_files`` (``.gz`` ones gzip-compressed), in order."""
    rows = []
    for name in [manifest["file"], *manifest.get("extra_files", [])]:
        path = folder / name
        text = gzip.decompress(path.read_bytes()).decode() if name.endswith(".gz") else path.read_text()
        rows += [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows


def tokenize(sentences: Sequence[str], tokenizer: Any, seq_len: int, *,
             token_type_ids: bool = False) -> dict[str, np.ndarray]:
    """Tokenize ``sentences`` with a Hugging Face tokenizer into static-shape model inputs.

    Returns ``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` when asked: BERT-style
    models default them to zeros, so most exports do not take them) as int64 arrays of shape
    ``[N, 1, seq_len]``: padded to ``seq_len`` and truncated, one ``[1, seq_len]`` tensor per sample.
    """
    if not sentences:
        raise ValueError("no sentences to tokenize")
    encoded = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=seq_len,
                        return_tensors="np")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    out = {}
    for name in names:
        if name not in encoded:
            raise ValueError(f"tokenizer returned no {name!r} (it gave {sorted(encoded)})")
        out[name] = np.ascontiguousarray(np.asarray(encoded[name], dtype=np.int64).reshape(len(sentences), 1, seq_len))
    return out


def perplexity(logits_fn: Callable[[np.ndarray], np.ndarray], token_windows: np.ndarray) -> float:
    """Perplexity of a causal LM over ``token_windows`` (int array ``[N, T + 1]``).

    For each window, ``logits_fn`` gets the first ``T`` tokens as an int64 ``[1, T]`` array and
    returns logits ``[1, T, V]`` (or ``[T, V]``); position ``t`` is scored on token ``t + 1``.
    Returns ``exp(mean negative log-likelihood)`` over all ``N * T`` predictions (float64 math).
    """
    windows = np.asarray(token_windows, dtype=np.int64)
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"token_windows must be [N, T + 1], got shape {list(windows.shape)}")
    nll = [token_nll(np.asarray(logits_fn(w[None, :-1])).reshape(len(w) - 1, -1), w[1:]) for w in windows]
    return float(np.exp(np.concatenate(nll).mean()))
