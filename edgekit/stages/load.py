"""Load stage: the model, its input specs (factory or ``--input``) and output specs."""
from __future__ import annotations

from edgekit import modelspec
from edgekit.context import BuildContext
from edgekit.errors import InputSpecError
from edgekit.stages.base import Stage
from edgekit.tensors import TensorSpec, default_layout

_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32",
                 "int8": "int8", "uint8": "uint8", "bool": "bool"}


def _names(given: list[str] | None, count: int, stem: str) -> list[str]:
    if given and len(given) == count:
        return list(given)
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def _make_example(specs: tuple[TensorSpec, ...], seed: int) -> tuple:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in specs:
        dtype = getattr(torch, spec.dtype)
        out.append(torch.rand(spec.shape, generator=gen).to(dtype) if dtype.is_floating_point
                   else torch.zeros(spec.shape, dtype=dtype))
    return tuple(out)


def _flatten_outputs(result) -> list:
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [v for v in result.values() if isinstance(v, torch.Tensor)]
    return [t for t in result if isinstance(t, torch.Tensor)]


class LoadModel(Stage):
    """Import the model and settle the names, shapes and dtypes of its inputs and outputs."""

    name = "load"
    description = "loading the model"

    def run(self, ctx: BuildContext) -> None:
        loaded = modelspec.load(ctx.options.model)
        ctx.model_label, ctx.task, ctx.default_calibration = loaded.label, loaded.task, loaded.calibration
        ctx.tokenize = loaded.extras.get("tokenize")
        ctx.hooks = {k: v for k, v in loaded.extras.items() if k in ("train_data", "evaluate") and v is not None}
        if loaded.module is None:
            self._onnx_specs(ctx, loaded)
        else:
            self._torch_specs(ctx, loaded)

    def _torch_specs(self, ctx: BuildContext, loaded: modelspec.LoadedModel) -> None:
        import torch

        given = ctx.options.inputs
        if given:
            example = _make_example(given, ctx.options.seed)
            names = [s.name for s in given]
        elif loaded.example_inputs:
            example = loaded.example_inputs
            names = _names(loaded.input_names, len(example), "input")
        else:
            raise InputSpecError(f"{loaded.label} gives no example inputs", "pass --input NAME:1x3x224x224[:dtype]")
        try:
            with torch.no_grad():
                outputs = _flatten_outputs(loaded.module(*example))
        except Exception as exc:
            shapes = ", ".join(f"{n}:{'x'.join(map(str, t.shape))}" for n, t in zip(names, example))
            raise InputSpecError(f"the model rejects inputs {shapes}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                                 "pass --input with the shape the model expects") from exc
        ctx.model, ctx.example_inputs = loaded.module, tuple(example)
        ctx.inputs = [TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch."),
                                 default_layout(tuple(t.shape), str(t.dtype).removeprefix("torch."))) for n, t in zip(names, example)]
        out_names = _names(loaded.output_names, len(outputs), "output")
        ctx.outputs = [TensorSpec(n, tuple(t.shape), "float32") for n, t in zip(out_names, outputs)]

    def _onnx_specs(self, ctx: BuildContext, loaded: modelspec.LoadedModel) -> None:
        import onnx

        graph = onnx.load(str(loaded.onnx_path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        overrides = {s.name: s for s in ctx.options.inputs}
        specs = []
        for value in (v for v in graph.input if v.name not in initializers):
            given = overrides.pop(value.name, None)
            specs.append(_onnx_override(value, given, loaded.label) if given else _onnx_spec(value))
        if overrides:
            raise InputSpecError(f"--input names {sorted(overrides)} are not inputs of {loaded.label}",
                                 f"the model's inputs are {[s.name for s in specs]}")
        ctx.source_onnx, ctx.inputs = loaded.onnx_path, specs
        ctx.outputs = [TensorSpec(o.name, tuple(d.dim_value or 1 for d in o.type.tensor_type.shape.dim), "float32")
                       for o in graph.output]


def _onnx_spec(value) -> TensorSpec:
    import onnx

    dims = value.type.tensor_type.shape.dim
    if any(not d.dim_value for d in dims):
        shown = "x".join(str(d.dim_value or d.dim_param or "?") for d in dims)
        raise InputSpecError(f"ONNX input {value.name!r} has a dynamic shape {shown}",
                             f"edge targets need static shapes: pass --input {value.name}:1x...")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    shape = tuple(d.dim_value for d in dims)
    return TensorSpec(value.name, shape, dtype, default_layout(shape, dtype))


def _onnx_override(value, given: TensorSpec, label: str) -> TensorSpec:
    """``--input`` for an ONNX graph input may only fill in what the graph leaves open (dynamic
    dims): a dtype or static dim that disagrees would otherwise fail deep inside a converter."""
    import onnx

    tensor = value.type.tensor_type
    dims = [d.dim_value or None for d in tensor.shape.dim] if tensor.HasField("shape") else None
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    except (KeyError, ValueError):  # undefined or exotic element type: nothing to compare
        dtype = given.dtype
    fits = dims is None or (len(dims) == len(given.shape) and all(d in (None, g) for d, g in zip(dims, given.shape)))
    if fits and dtype == given.dtype:
        return given
    graph = "x".join(str(d or "?") for d in dims) if dims is not None else "?"
    shape = "x".join(map(str, given.shape if fits else dims))
    hint = (f"pass --input {given.name}:{shape}:{dtype}" if "None" not in shape
            else f"set only the dynamic (?) dimensions of {graph}, dtype {dtype}")
    raise InputSpecError(f"--input {given.name}:{'x'.join(map(str, given.shape))}:{given.dtype} disagrees with {label}: "
                         f"its input {given.name!r} is {graph}:{dtype}", hint)
