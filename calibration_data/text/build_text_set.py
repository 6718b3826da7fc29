"""Generate edgekit's ``text`` calibration set: English sentences from the standard library's
docstrings.

Run from the repository root::

    .venv/bin/python calibration_data/text/build_text_set.py            # rewrite in place
    .venv/bin/python calibration_data/text/build_text_set.py --out /tmp/x

Nothing is downloaded: the sentences come from docstrings parsed with ``ast`` (see
``edgekit.text.stdlib_docstrings``): the running Python's standard library, and for the large
``train`` file also the packages installed beside edgekit. The output is a function of the Python
version and of those packages' versions (both recorded in the manifest): running twice gives
byte-identical files.

Output: ``sentences.jsonl`` (one ``{"id", "split", "module", "text"}`` object per line),
``train.jsonl.gz`` (more ``train`` rows, same format) and ``manifest.json``. Splits are disjoint:
``calibration`` for quantization, ``verification`` for comparing artifacts with the reference,
``heldout`` only for evaluation (never calibrate or train on it), and ``train``, extra
(unlabelled) training input for compression (distillation: the teacher labels it). The first three
splits are dealt first from a capped standard-library pool, so adding ``train`` left them
unchanged; ``train.jsonl.gz`` was added later the same way, leaving ``sentences.jsonl`` unchanged.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import io
import json
import platform
import random
import re
import sysconfig
from collections import defaultdict
from collections.abc import Iterable, Iterator
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
# The large train file: every standard-library sentence, and at most this many per file of the
# installed packages (torch, tensorflow, scipy, ... hold tens of thousands). Distilling a
# sentence encoder needs data on this scale: 3-layer MiniLM students reach a held-out cosine of
# 0.77 on the 842 small-set sentences and above 0.9 only with tens of thousands.
SITE_PER_FILE = 1000
TRAIN_FILE = "train.jsonl.gz"
# A train sentence sharing any run of this many words with a fixed-split sentence is dropped:
# packages vendor and paraphrase stdlib docstrings, and a near copy of a heldout sentence in
# training would inflate the heldout figures.
SHINGLE = 6

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


def build_rows(candidates: list[tuple[str, str]] | None = None) -> list[dict]:
    """Shuffle the candidates (default: ``candidate_sentences()``; a list passed in is shuffled in
    place) with a fixed seed and deal them into the splits; the rest is ``train`` (minus sentences
    sharing a ``SHINGLE``-word run with the others)."""
    candidates = candidate_sentences() if candidates is None else candidates
    total = sum(SPLIT_SIZES.values())
    if len(candidates) < total:
        raise SystemExit(f"only {len(candidates)} sentences qualify, need {total}")
    random.Random(SEED).shuffle(candidates)
    rows, start = [], 0
    for split, size in SPLIT_SIZES.items():
        for module, text in candidates[start:start + size]:
            rows.append({"id": len(rows), "split": split, "module": module, "text": text})
        start += size
    fixed = set().union(*(_shingles(r["text"]) for r in rows))
    for module, text in candidates[start:]:
        if not _shingles(text) & fixed:  # near copies of evaluated sentences never train
            rows.append({"id": len(rows), "split": REST_SPLIT, "module": module, "text": text})
    return rows


def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", sentence.lower())


def _shingles(sentence: str) -> set[tuple[str, ...]]:
    words = _words(sentence)
    return {tuple(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def _prose(source: str, docstrings: Iterable[tuple[str, str]], cap: int) -> Iterator[tuple[str, str]]:
    """``(source/module, sentence)`` for the prose sentences of ``docstrings``, ``cap`` per file."""
    per_module: dict[str, int] = defaultdict(int)
    for module, doc in docstrings:
        for sentence in split_sentences(doc):
            if per_module[module] < cap and is_prose(sentence):
                per_module[module] += 1
                yield f"{source}/{module}", sentence


def extra_train_rows(rows: list[dict], site_packages: bool = True) -> list[dict]:
    """More ``train`` rows: every stdlib prose sentence and up to ``SITE_PER_FILE`` per file of the
    installed packages, in a fixed order, minus anything in ``rows`` (case and punctuation
    ignored) and anything sharing a ``SHINGLE``-word run with a calibration/verification/heldout
    sentence. ``site_packages=False`` gives the stdlib rows only: the file's leading rows, which
    the tests regenerate (parsing every installed package takes minutes)."""
    seen = {" ".join(_words(r["text"])) for r in rows}
    fixed = set().union(*(_shingles(r["text"]) for r in rows if r["split"] != REST_SPLIT))
    site = sysconfig.get_paths()["purelib"]
    site_prose = _prose("site-packages", stdlib_docstrings(site), SITE_PER_FILE) if site_packages else ()
    out = []
    for module, text in [*_prose("stdlib", stdlib_docstrings(), 10**9), *site_prose]:
        key = " ".join(_words(text))
        if key in seen or _shingles(text) & fixed:
            continue
        seen.add(key)
        out.append({"id": len(rows) + len(out), "split": REST_SPLIT, "module": module, "text": text})
    return out


def package_versions(rows: list[dict]) -> dict[str, str]:
    """``{distribution: version}`` of the installed packages the extra rows came from."""
    tops = {r["module"].split("/")[1] for r in rows if r["module"].startswith("site-packages/")}
    owners = importlib.metadata.packages_distributions()
    dists = {d for top in tops for d in owners.get(top.removesuffix(".py"), [])}
    return {d: importlib.metadata.version(d) for d in sorted(dists, key=str.lower)}


def jsonl(rows: list[dict]) -> str:
    """The rows as written: one ASCII JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """gzip with a zero timestamp and no file name, so the bytes depend on the rows only."""
    raw = jsonl(rows).encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(raw)
    path.write_bytes(buffer.getvalue())


def manifest(rows: list[dict], candidates: int, extra: list[dict]) -> dict:
    return {
        "name": "text",
        "description": ("English sentences (8-40 words) from docstrings: the Python standard library's for "
                        "calibrating and checking text models (token inputs), also installed packages' for 'train'. "
                        "'calibration' feeds quantization, "
                        "'verification' compares artifacts with the reference, 'heldout' is only for evaluation, "
                        "'train' is extra unlabelled training input for compression (distillation)."),
        "file": "sentences.jsonl",
        "extra_files": [TRAIN_FILE],
        "format": "jsonl (.gz: gzip of it): one {id, split, module, text} object per line",
        "kind": "text",
        "task": "embedding",
        "splits": {split: sum(r["split"] == split for r in rows + extra) for split in (*SPLIT_SIZES, REST_SPLIT)},
        "provenance": {
            "source": ("docstrings (module, class and function), parsed with ast: the Python standard library's; "
                       "for the train file also those of the installed packages listed below"),
            "python": platform.python_version(),
            "generator": SCRIPT,
            "method": (f"edgekit.text.split_sentences on each docstring; kept plain ASCII prose of {MIN_WORDS}-{MAX_WORDS} "
                       f"words ending with a full stop, no code/markup characters; deduplicated case-insensitively; at most "
                       f"{PER_MODULE} per source file; {candidates} candidates shuffled with random.Random({SEED}) and dealt "
                       f"into the splits in order, the remainder into '{REST_SPLIT}' except sentences sharing a {SHINGLE}-word run "
                       f"with a sentence of the other splits"),
            "seed": SEED,
            "excluded_stdlib_folders": "test, idlelib, lib2to3, tkinter, turtledemo, ensurepip, pydoc_data",
            "train_file": (f"{TRAIN_FILE}: {len(extra)} more '{REST_SPLIT}' sentences (same filter): every other stdlib "
                           f"sentence, then up to {SITE_PER_FILE} per source file of the installed packages below (their "
                           f"docstrings, folders named test/tests skipped); minus duplicates of sentences.jsonl and any "
                           f"sentence sharing a {SHINGLE}-word run with a calibration/verification/heldout sentence"),
            "packages": package_versions(extra),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    candidates = candidate_sentences()
    rows = build_rows(list(candidates))
    extra = extra_train_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentences.jsonl").write_text(jsonl(rows))
    write_jsonl_gz(args.out / TRAIN_FILE, extra)
    (args.out / "manifest.json").write_text(json.dumps(manifest(rows, len(candidates), extra), indent=2) + "\n")
    print(f"wrote {len(rows)} + {len(extra)} sentences to {args.out}")


if __name__ == "__main__":
    main()
