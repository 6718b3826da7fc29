"""Run a third-party converter in its own process, reproducibly.

Why a separate process: onnx2tf/Keras keep global name counters, so a second conversion in the
same process names tensors differently and the .tflite bytes change; a crash or ``sys.exit`` in
the tool cannot take the build down; and its C++ chatter stays out of our log.

Why address-space randomisation is switched off for it: onnxruntime writes ``.ort`` files from
hash maps seeded by addresses, so with ASLR two conversions of one model differ in byte order
(measured: 5 runs, 5 different sha256s; with ASLR off, 5 identical). Linux only; elsewhere the
tool runs normally and ``.ort`` bytes may vary between builds. The child also gets a fixed,
minimal environment: the size of the environment moves the stack, and with it those hash seeds
(measured: one extra 90-byte variable changed the .ort bytes). Builds from one installation are
therefore byte-identical whoever starts them; a different install path can still change .ort bytes.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from edgekit.errors import ConversionError

_ADDR_NO_RANDOMIZE = 0x0040000
# what a converter needs to find Python packages and temp space; nothing caller-specific
_KEPT_ENV = ("PATH", "HOME", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def _no_aslr() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.personality(_ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        pass


def run_tool(code: str, args: list[str], cwd: Path, what: str, hint: str) -> str:
    """Run ``python -c code args...`` in ``cwd``; return its output or raise ConversionError
    with the last lines of the tool's log."""
    env = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "", "LC_ALL": "C.UTF-8"})
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            preexec_fn=_no_aslr if sys.platform.startswith("linux") else None, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])[-400:]
        raise ConversionError(f"{what} failed (exit {result.returncode}): {tail}", hint)
    return result.stdout + result.stderr
