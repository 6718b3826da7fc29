"""The TinyGPT text: standard-library docstrings as bytes, split by source file.

Every ``HELDOUT_EVERY``-th source file (in sorted order) is held out for evaluation; the model
never trains on it. numpy only.
"""
from __future__ import annotations

import numpy as np

from edgekit.text import stdlib_docstrings

HELDOUT_EVERY = 10
SEPARATOR = b"\n\n"


def corpus_bytes() -> tuple[bytes, bytes]:
    """``(train, heldout)`` text as UTF-8 bytes: docstrings joined by blank lines, grouped by file."""
    files: dict[str, list[str]] = {}
    for module, doc in stdlib_docstrings():
        files.setdefault(module, []).append(doc)
    train, heldout = [], []
    for index, module in enumerate(sorted(files)):
        (heldout if index % HELDOUT_EVERY == 0 else train).extend(files[module])
    join = lambda docs: SEPARATOR.join(d.encode("utf-8") for d in docs)  # noqa: E731
    return join(train), join(heldout)


def to_array(text: bytes) -> np.ndarray:
    """Bytes as an int64 token array."""
    return np.frombuffer(text, dtype=np.uint8).astype(np.int64)


def eval_windows(text: bytes, count: int = 128, length: int = 65) -> np.ndarray:
    """``count`` non-overlapping ``length``-byte windows spread evenly over ``text``
    (``[count, length]`` int64): the input to ``edgekit.text.perplexity`` for context 64."""
    tokens = to_array(text)
    starts = np.linspace(0, len(tokens) - length, count).astype(np.int64)
    starts = starts - starts % length  # non-overlapping when the text is long enough
    return np.stack([tokens[s:s + length] for s in starts])
