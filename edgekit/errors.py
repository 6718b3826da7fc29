"""Errors edgekit raises on purpose. Each one says what is wrong and how to fix it.

The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug and shows
a traceback only with ``--debug``.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    exit_code = 2

    def __init__(self, problem: str, hint: str = "") -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem} ({hint})" if hint else problem)


class TargetError(EdgekitError):
    """A target profile is unknown or invalid."""


class ModelSpecError(EdgekitError):
    """The model argument cannot be loaded (missing file, bad factory spec, corrupt ONNX)."""


class InputSpecError(EdgekitError):
    """Input names, shapes or dtypes are missing or inconsistent."""


class CalibrationError(EdgekitError):
    """Calibration data is missing or does not fit the model's inputs."""


class UnsupportedError(EdgekitError):
    """A combination of options, model and target that edgekit refuses before any work."""


class ConversionError(EdgekitError):
    """A converter (onnx2tf, onnxruntime.quantization, ...) failed on this model."""

    exit_code = 3


class VerificationError(EdgekitError):
    """An artifact's outputs drifted beyond the profile's tolerance."""

    exit_code = 4


class OutputExistsError(EdgekitError):
    """The output folder exists and --force was not given."""


class MissingDependencyError(EdgekitError, ImportError):
    """An optional package is not installed (an ImportError too, so ``except ImportError`` still
    catches it)."""


class BenchError(EdgekitError):
    """A benchmark could not run, or its result cannot be fetched or read (bundle, SSH, device, file)."""


class EmulationError(EdgekitError):
    """The emulated (qemu user-mode) device userland cannot be prepared or run."""


class LockError(EdgekitError):
    """The lock (constraints.txt) is missing or not a list of NAME==VERSION lines."""


class MaxDropError(EdgekitError):
    """A ``--max-drop`` value cannot be read, or bounds a metric this model is not judged by."""


class QualityBudgetError(EdgekitError):
    """Compression cost more quality, against the original model, than the budget allows."""

    exit_code = 4


class OutputBusyError(EdgekitError):
    """Another build holds the lock on this output folder."""


class OutputLocationError(EdgekitError):
    """The output folder's parent cannot be written (read-only, permission denied)."""


class DiskFullError(EdgekitError):
    """The disk (or quota) holding the output folder ran out of space during the build."""
