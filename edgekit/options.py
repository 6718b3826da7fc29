"""Build options, declared once. The CLI and the Python API both fill in :class:`BuildOptions`."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edgekit.budget import MaxDrop
from edgekit.errors import UnsupportedError
from edgekit.tensors import TensorSpec


class QualitySplit(str, Enum):
    """Which part of the labelled ``eval`` split the Evaluate stage measures: all of it, or one
    of its two interleaved halves (``edgekit search`` selects on ``search`` and reports the
    chosen artifact on ``heldout``, which selection never saw)."""

    ALL = "all"
    SEARCH = "search"
    HELDOUT = "heldout"

    def take(self, values):  # -> the same kind of array (or None)
        """This part of ``values`` (an eval-split array, or None): all of it, the even samples
        (``search``) or the odd ones (``heldout``), so both halves keep the split's class balance.
        The one rule for every figure a search judges by (Evaluate, and the compression steps)."""
        if values is None or self is QualitySplit.ALL:
            return values
        return values[0 if self is QualitySplit.SEARCH else 1::2]


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``edgekit build`` takes.

    Attributes:
        target: a bundled profile name (``rpi4``) or the path of a profile ``.toml``.
        model: ``file.py:factory``, an exported program ``.pt2``, an ``.onnx`` file, or None for
            the bundled example (a CNN trained on scikit-learn's digits).
        out: bundle folder; default ``dist/<target>``.
        calibration: a bundled set name (``digits``, ``photos``) or a folder of samples;
            default: the model's own set.
        inputs: input specs overriding the factory's (``--input NAME:1x3x224x224``).
        force: replace an existing bundle at ``out``.
        allow_drift: record verification failures instead of stopping the build.
        golden_samples: how many held-out samples go into ``golden.npz`` at most.
        latency_runs: timed runs per artifact for the host latency (median reported).
        seed: seeds torch and numpy so builds are reproducible.
        recipe: compression steps in CLI shorthand (``prune=structured:0.5``, ``qat=epochs=1``).
        recipe_file: a TOML recipe (``[[compress]]`` tables); default ``edgekit.toml`` beside a
            ``file.py:factory`` model when that file exists.
        max_drop: overrides the profile's ``[budget]`` bound on what compression may cost
            against the original model (``MaxDrop.parse("2pp")``, ``"cos:0.99"``, ``"ppl:5%"``);
            ``None`` keeps the profile's.
        verify_on: also verify every artifact inside an emulated userland of this architecture
            (``aarch64``: the device runtimes' ARM kernels under qemu), recorded as the
            ``arm_emulated`` verdict; ``none`` never does; None (default) does it when the target
            is aarch64 and the emulated userland is already cached (see :mod:`edgekit.device.emulate`).
        overlay: a profile overlay TOML (``edgekit search``'s ``chosen.toml``) merged over the
            target profile before validation; None: the profile as it is.
        quality_split: the part of the held-out ``eval`` split the accuracy is measured on.
        sensitivity: also measure each layer's int8 sensitivity (the manifest's ``sensitivity``;
            one calibration per layer, so off unless asked: ``edgekit search`` asks).
        threads: CPU threads the build may use (torch, and the host sessions that verify and
            time the artifacts); None: a recipe file's ``[build] threads``, else every core of
            this host. ``edgekit search`` gives each of its parallel trials its share of the
            cores and records it in the trial's recipe, since torch's float reductions (fine-
            tuning, BatchNorm statistics) give other bits with another count.
    """

    target: str
    model: str | None = None
    out: Path | None = None
    calibration: str | None = None
    inputs: tuple[TensorSpec, ...] = ()
    force: bool = False
    allow_drift: bool = False
    golden_samples: int = 32
    latency_runs: int = 50
    seed: int = 0
    recipe: tuple[str, ...] = ()
    recipe_file: Path | None = None
    max_drop: MaxDrop | None = None
    verify_on: str | None = None
    overlay: Path | None = None
    quality_split: QualitySplit = QualitySplit.ALL
    sensitivity: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise UnsupportedError(f"--threads {self.threads} is not a thread count", "give 1 or more")

    def out_dir(self, target_name: str) -> Path:
        return Path(self.out) if self.out else Path("dist") / target_name
