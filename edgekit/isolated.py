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

Paths are passed relative to the tool's working folder: argv, like the environment, moves the
stack, and the working folder sits in the build's staging folder beside ``--out`` (measured: the
same conversion in two folders of different path length gave two .ort sha256s; with relative
arguments, one).

Why the child dies with the build: a build killed by SIGKILL (or the OOM killer) runs no cleanup,
and an orphaned onnx2tf would keep writing into the dead build's staging folder. On Linux the
child asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); it also gets its
own process group, which is killed whenever ``run_tool`` returns or raises, so helpers the
converter started do not outlive it either.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edgekit.errors import ConversionError

_ADDR_NO_RANDOMIZE = 0x0040000
_PR_SET_PDEATHSIG = 1
# what a converter needs to find Python packages and temp space; nothing caller-specific
_KEPT_ENV = ("PATH", "HOME", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def _no_aslr() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.personality(_ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        pass


def _child_setup(parent: int) -> Callable[[], None]:
    """The preexec function: ASLR off, and SIGKILL for the child when ``parent`` dies."""

    def setup() -> None:  # runs in the child between fork and exec
        _no_aslr()
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the build died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _relative(args: list[str], cwd: Path) -> list[str]:
    """Absolute path arguments rewritten relative to ``cwd`` (when ``cwd`` has no symlinks, so
    ``..`` means the same to the kernel as it does lexically)."""
    if os.path.realpath(cwd) != os.path.abspath(cwd):
        return list(args)
    return [os.path.relpath(a, cwd) if os.path.isabs(a) else a for a in args]


def run_tool(code: str, args: list[str], cwd: Path, what: str, hint: str) -> str:
    """Run ``python -c code args...`` in ``cwd``; return its output or raise ConversionError
    with the last lines of the tool's log."""
    env = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "", "LC_ALL": "C.UTF-8"})
    linux = sys.platform.startswith("linux")
    with subprocess.Popen([sys.executable, "-c", code, *_relative(args, cwd)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True,
                          preexec_fn=_child_setup(os.getpid()) if linux else None) as proc:
        try:
            stdout, stderr = proc.communicate()
        finally:
            _kill_group(proc.pid)  # whatever the converter left running, and the converter on Ctrl-C
    if proc.returncode != 0:
        tail = " | ".join((stdout + stderr).strip().splitlines()[-3:])[-400:]
        raise ConversionError(f"{what} failed (exit {proc.returncode}): {tail}", hint)
    return stdout + stderr
