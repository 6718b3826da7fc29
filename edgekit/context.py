"""The state a build carries from stage to stage."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.calibration import CalibrationSet
from edgekit.options import BuildOptions
from edgekit.targets import TargetProfile
from edgekit.tensors import TensorSpec


class Reporter(Protocol):
    """Receives progress; the CLI prints it, the API default stays silent."""

    def stage(self, name: str, detail: str = "") -> None: ...

    def info(self, message: str) -> None: ...


class SilentReporter:
    def stage(self, name: str, detail: str = "") -> None:
        pass

    def info(self, message: str) -> None:
        pass


@dataclass
class Artifact:
    """One file of the bundle that a runtime executes, and what was measured of it."""

    file: str
    format: str  # tflite | onnx | ort
    precision: str  # fp32 | fp16 | int8
    runtime: str  # litert | onnxruntime
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    host_latency_ms: dict = field(default_factory=dict)
    compatibility: dict = field(default_factory=dict)
    bytes: int = 0
    sha256: str = ""
    #: the file whose reference run judges this one off-target (an .ort: the .onnx it came from)
    reference_via: str | None = None
    #: the quantization scheme actually used (ORT int8: types, per-channel, reduce_range)
    quantization: dict = field(default_factory=dict)
    #: this host's kernel figures beside a reference-semantics verdict (reported, not judged)
    host_kernels: dict = field(default_factory=dict)
    #: further verdicts by other arithmetic, e.g. ``arm_emulated`` (ARM kernels under qemu)
    verdicts: dict = field(default_factory=dict)


@dataclass
class BuildContext:
    """Mutable build state. Stages read what earlier stages left and add their part."""

    options: BuildOptions
    profile: TargetProfile
    bundle_dir: Path  # temporary; renamed into place when every stage succeeded
    scratch_dir: Path  # intermediate files that never reach the bundle
    reporter: Reporter = field(default_factory=SilentReporter)
    model: Any = None  # torch.nn.Module, None for ONNX input
    example_inputs: tuple = ()
    source_onnx: Path | None = None  # set when the user gave an .onnx file
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    task: str | None = None
    default_calibration: str | None = None
    model_label: str = ""
    calibration: CalibrationSet | None = None
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # verification outputs
    onnx_path: Path | None = None  # the cleaned fp32 ONNX every converter starts from
    artifacts: list[Artifact] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)
    accuracy: dict = field(default_factory=dict)
    compression: list[dict] = field(default_factory=list)
    recipe: Any = None  # edgekit.compress.Recipe, parsed before any stage runs
    qat_model: Any = None  # the fake-quant model when the recipe ends with QAT
    timings: dict[str, float] = field(default_factory=dict)
    tokenize: Any = None  # the model's ``tokenize_text(sentences)`` hook, for text calibration sets
    hooks: dict = field(default_factory=dict)  # the model file's train_data / evaluate functions
    llm: Any = None  # edgekit.llm.state.LlmState in a decoder-LLM build
    sensitivity: dict = field(default_factory=dict)  # per-layer int8 sensitivity, when asked
    original: Any = None  # the uncompressed torch model, when a recipe compressed ctx.model

    def host_threads(self, wanted: int) -> int:
        """Threads for a host session that asks for ``wanted`` (a profile's runtime threads):
        never more than the build may use (``--threads``, a search trial's share of the cores)."""
        return max(1, min(wanted, self.options.threads or os.cpu_count() or 1))

    @property
    def trainable(self) -> bool:
        """Whether compression can recover what it costs here: a PyTorch model with labelled
        training data (a ``train_data`` hook, or a calibration set with a labelled train split)."""
        cal = self.calibration
        labelled = cal is not None and cal.train_labels is not None and cal.train_samples() is not None
        return self.model is not None and self.llm is None and ("train_data" in self.hooks or labelled)

    @property
    def token_inputs(self) -> bool:
        """Whether the model takes integer (token) inputs: transformers get their own schemes."""
        from edgekit.tensors import takes_tokens

        return takes_tokens(s.dtype for s in self.inputs)
