"""Run third-party tools quietly: a converter in its own process, reproducibly (``run_tool``), or
a chatty library in this process with its output captured (``captured``).

onnx2tf, TensorFlow's converter and the torch exporter print from C++ straight to fd 1/2, which
``contextlib.redirect_stdout`` cannot catch; a build log should show our progress, not theirs, so
``captured`` redirects the file descriptors themselves and keeps the text for error messages.

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
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
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


_LITERALS = (str, int, float, bool, type(None))


def child_code(tool: Callable[..., object]) -> str:
    """The ``python -c`` code that calls ``tool`` in the child: ``import M; M.f(literals)``.

    ``tool`` is a module-level function (imported there by its qualified name), or a
    ``functools.partial`` of one with literal arguments. Like a command-line ``main`` it reads its
    arguments from ``sys.argv`` and reports failure by raising or ``sys.exit``. Why this exact,
    minimal code: the child's ``.ort`` bytes depend on its argv length and on what it imported
    before the tool ran (measured: two padding spaces, or importing one module first, each gave
    another sha256), so the code stays the same as long as the tool does."""
    args, kwargs = (), {}
    if isinstance(tool, functools.partial):
        tool, args, kwargs = tool.func, tool.args, tool.keywords
    module, name = getattr(tool, "__module__", None), getattr(tool, "__qualname__", "")
    if not module or module == "__main__" or not name or "<" in name:
        raise ValueError(f"run_tool needs a module-level function importable by name, not {tool!r}")
    if not all(isinstance(value, _LITERALS) for value in (*args, *kwargs.values())):
        raise ValueError(f"run_tool passes only literal arguments to {module}.{name}, not {args} {kwargs}")
    literals = [repr(value) for value in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"import {module}; {module}.{name}({', '.join(literals)})"


def run_tool(tool: Callable[..., object], args: list[str], cwd: Path, what: str, hint: str) -> str:
    """Call ``tool`` (see :func:`child_code`) in a fresh Python process in ``cwd`` with ``args`` as
    its command line; return its output or raise ConversionError with the last lines of its log."""
    env = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "", "LC_ALL": "C.UTF-8"})
    linux = sys.platform.startswith("linux")
    argv = [sys.executable, "-c", child_code(tool), *_relative(args, cwd)]
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
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
