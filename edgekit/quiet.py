"""Silence chatty converters at the file-descriptor level and keep their log for errors.

onnx2tf, TensorFlow's converter and the torch exporter print from C++ straight to fd 1/2, which
``contextlib.redirect_stdout`` cannot catch; a build log should show our progress, not theirs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


class CapturedLog:
    """The text a :func:`captured` block printed, readable after the block."""

    text: str = ""

    def tail(self, lines: int = 3, chars: int = 300) -> str:
        return " | ".join(self.text.strip().splitlines()[-lines:])[-chars:]


@contextlib.contextmanager
def captured() -> Iterator[CapturedLog]:
    """Redirect fds 1 and 2 (and Python's streams, warnings, logging) into a temp file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    log = CapturedLog()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryFile(mode="w+") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            root.setLevel(level)
            sink.seek(0)
            log.text = sink.read()
