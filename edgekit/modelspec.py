"""Turn the MODEL argument into a loaded model: ``file.py:factory``, ``.pt2`` or ``.onnx``.

A factory returns an ``nn.Module`` or ``(module, example_inputs)``. Its file may also define
``INPUT_NAMES``, ``OUTPUT_NAMES``, ``CALIBRATION`` (a bundled set name) and ``TASK``
(``classification`` enables top-1 metrics; ``embedding`` and ``lm`` enable text metrics), which is
how the bundled examples describe themselves. Text models add ``tokenize_text(sentences) ->
{input_name: int64 [N, 1, seq_len]}`` so text calibration sets can feed them. Compression uses
``train_data() -> (x_train, y_train, x_eval, y_eval)`` (tensors, labels may be None) instead of
the calibration set when present, and reports ``evaluate(model, x_eval, y_eval) -> {metric:
value}`` for the model after every compression step.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ModelSpecError


@dataclass
class LoadedModel:
    """What the load stage hands on. ``module`` is None for ONNX input."""

    label: str
    module: Any = None
    example_inputs: tuple = ()
    onnx_path: Path | None = None
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    calibration: str | None = None
    task: str | None = None
    extras: dict = field(default_factory=dict)


# optional functions a model file may define, by the name the build knows them under
_HOOKS = {"tokenize": "tokenize_text", "train_data": "train_data", "evaluate": "evaluate"}
EXAMPLES = {"digits": "edgekit.examples.digits.model", "minilm": "edgekit.examples.minilm",
            "minilm-student": "edgekit.examples.minilm:student_factory", "tinygpt": "edgekit.examples.tinygpt.model"}


def load(spec: str | None) -> LoadedModel:
    """Load ``spec``; None means the bundled digits example, ``example:NAME`` another example."""
    if spec is None or spec.startswith("example:"):
        name = (spec or "example:digits").removeprefix("example:")
        if name not in EXAMPLES:
            raise ModelSpecError(f"unknown example {name!r}", f"choose one of {', '.join(EXAMPLES)}")
        module_name, _, attr = EXAMPLES[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelSpecError(f"example {name!r} cannot be imported: {exc}", "pip install 'edgekit[transformers]'") from exc
        return _from_factory_module(module, attr or "factory", f"example:{name}")
    if spec.endswith(".onnx"):
        return _load_onnx(Path(spec))
    if spec.endswith(".pt2"):
        return _load_pt2(Path(spec))
    if ":" not in spec:
        raise ModelSpecError(f"cannot tell what model {spec!r} is", "use path/to/file.py:factory, a .pt2 or an .onnx file")
    file, _, attr = spec.rpartition(":")
    return _from_factory_module(_import_file(Path(file)), attr, spec)


def _import_file(path: Path) -> Any:
    if path.suffix != ".py":
        raise ModelSpecError(f"factory file {path} is not a .py file", "use path/to/file.py:factory")
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist", "check the path")
    name = f"_edgekit_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as exc:  # a model file must not end the build silently with its own exit code
        raise ModelSpecError(f"importing {path} called sys.exit({exc.code!r})", "a model file must not exit; fix it") from None
    except Exception as exc:  # the user's code: report it as their error, in one line
        raise ModelSpecError(f"importing {path} failed: {type(exc).__name__}: {exc}", "fix the model file") from exc
    return module


def _from_factory_module(module: Any, attr: str, label: str) -> LoadedModel:
    import torch

    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(f"{label}: no callable {attr!r} in {getattr(module, '__file__', module)}",
                             "name a function that returns an nn.Module or (module, example_inputs)")
    try:
        result = factory()
    except SystemExit as exc:
        raise ModelSpecError(f"{label}: {attr}() called sys.exit({exc.code!r})", "return the model instead of exiting") from None
    except Exception as exc:
        raise ModelSpecError(f"{label}: {attr}() raised {type(exc).__name__}: {exc}", "fix the factory") from exc
    model, example = (result if isinstance(result, tuple) else (result, ()))
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{label}: {attr}() returned {type(model).__name__}, not an nn.Module",
                             "return a torch.nn.Module or (module, example_inputs)")
    example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    return LoadedModel(label, model.eval(), example, None, getattr(module, "INPUT_NAMES", None),
                       getattr(module, "OUTPUT_NAMES", None), getattr(module, "CALIBRATION", None),
                       getattr(module, "TASK", None), {hook: getattr(module, attr, None) for hook, attr in _HOOKS.items()})


def _load_pt2(path: Path) -> LoadedModel:
    from edgekit.pt2 import load_exported_program

    if not path.is_file():
        raise ModelSpecError(f"exported program {path} does not exist", "check the path")
    program, example = load_exported_program(path)  # nothing in the archive is unpickled
    return LoadedModel(str(path), program.module(), example)


def _load_onnx(path: Path) -> LoadedModel:
    import onnx

    if not path.is_file():
        raise ModelSpecError(f"ONNX file {path} does not exist", "check the path")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelSpecError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
                             "re-export it, e.g. with torch.onnx.export") from exc
    return LoadedModel(str(path), None, (), path)
