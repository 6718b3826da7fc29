"""Generate edgekit's ``text`` calibration set: English sentences from the standard library's
docstrings.

Run from the repository root::

    .venv/bin/python calibration_data/text/build_text_set.py            # rewrite in place
    .venv/bin/python calibration_data/text/build_text_set.py --out /tmp/x

Nothing is downloaded: the sentences come from the docstrings of the running Python's standard
library, parsed with ``ast`` (see ``edgekit.text.stdlib_docstrings``). The output is a function of
the Python version only (recorded in the manifest): running twice gives byte-identical files.

Output: ``sentences.jsonl`` (one ``{"id", "split", "module", "text"}`` object per line) and
``manifest.json``. Splits are disjoint: ``calibration`` for quantization, ``verification`` for
comparing artifacts with the reference, ``heldout`` only for evaluation (never calibrate or train on
it), and ``train``, every remaining candidate, extra (unlabelled) training input for compression
(distillation: the teacher labels it). The first three splits are dealt first, so adding ``train``
left them unchanged.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import re
from collections import defaultdict
from pathlib import Path

from edgekit.text import split_sentences, stdlib_docstrings

HERE = Path(__file__).resolve().parent
SCRIPT = "calibration_data/text/build_text_set.py"
SEED = 0
SPLIT_SIZES = {"calibration": 320, "verification": 32, "heldout": 64}
# Dealt after the fixed-size splits: every candidate left over.
REST_SPLIT = "train"
MIN_WORDS, MAX_WORDS = 8, 40
# At most this many sentences from one source file, so no module dominates (variety).
PER_MODULE = 3

# Keep prose, drop code: no doctest prompts, markup, paths, URLs or symbol-heavy text.
_REJECT = re.compile(r">>>|::|\.\.\.|https?:|www\.|[{}\[\]|\\<>=`#*@$~^]|\b[a-z]+_[a-z_]+\b|\(\)")


def is_prose(sentence: str) -> bool:
    """A plain English sentence: ASCII, capitalised, ends with a full stop, 8-40 words, mostly
    letters."""
    words = sentence.split()
    if not (MIN_WORDS <= len(words) <= MAX_WORDS) or not sentence.isascii():
        return False
    if not sentence[0].isupper() or not sentence.endswith(".") or _REJECT.search(sentence):
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters / len(sentence) >= 0.9


def candidate_sentences() -> list[tuple[str, str]]:
    """``(module, sentence)`` pairs: prose, deduplicated (case-insensitive, first occurrence wins),
    at most ``PER_MODULE`` per module, in stdlib order."""
    seen: set[str] = set()
    per_module: dict[str, int] = defaultdict(int)
    out = []
    for module, doc in stdlib_docstrings():
        for sentence in split_sentences(doc):
            key = sentence.lower()
            if key in seen or per_module[module] >= PER_MODULE or not is_prose(sentence):
                continue
            seen.add(key)
            per_module[module] += 1
            out.append((module, sentence))
    return out


def build_rows() -> list[dict]:
    """Shuffle the candidates with a fixed seed and deal them into the splits; the rest is ``train``."""
    candidates = candidate_sentences()
    total = sum(SPLIT_SIZES.values())
    if len(candidates) < total:
        raise SystemExit(f"only {len(candidates)} sentences qualify, need {total}")
    random.Random(SEED).shuffle(candidates)
    rows, start = [], 0
    for split, size in SPLIT_SIZES.items():
        for module, text in candidates[start:start + size]:
            rows.append({"id": len(rows), "split": split, "module": module, "text": text})
        start += size
    for module, text in candidates[start:]:
        rows.append({"id": len(rows), "split": REST_SPLIT, "module": module, "text": text})
    return rows


def manifest(rows: list[dict], candidates: int) -> dict:
    return {
        "name": "text",
        "description": ("English sentences (8-40 words) from the docstrings of the Python standard library, "
                        "for calibrating and checking text models (token inputs). 'calibration' feeds quantization, "
                        "'verification' compares artifacts with the reference, 'heldout' is only for evaluation, "
                        "'train' is extra unlabelled training input for compression (distillation)."),
        "file": "sentences.jsonl",
        "format": "jsonl: one {id, split, module, text} object per line",
        "kind": "text",
        "task": "embedding",
        "splits": {split: sum(r["split"] == split for r in rows) for split in (*SPLIT_SIZES, REST_SPLIT)},
        "provenance": {
            "source": "docstrings of the Python standard library (module, class and function), parsed with ast",
            "python": platform.python_version(),
            "generator": SCRIPT,
            "method": (f"edgekit.text.split_sentences on each docstring; kept plain ASCII prose of {MIN_WORDS}-{MAX_WORDS} "
                       f"words ending with a full stop, no code/markup characters; deduplicated case-insensitively; at most "
                       f"{PER_MODULE} per source file; {candidates} candidates shuffled with random.Random({SEED}) and dealt "
                       f"into the splits in order, the remainder into '{REST_SPLIT}'"),
            "seed": SEED,
            "excluded_stdlib_folders": "test, idlelib, lib2to3, tkinter, turtledemo, ensurepip, pydoc_data",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rows = build_rows()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentences.jsonl").write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows))
    (args.out / "manifest.json").write_text(json.dumps(manifest(rows, len(candidate_sentences())), indent=2) + "\n")
    print(f"wrote {len(rows)} sentences to {args.out}")


if __name__ == "__main__":
    main()
