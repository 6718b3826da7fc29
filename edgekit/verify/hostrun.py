"""Run artifacts on the build host with their real runtimes (ai-edge-litert, onnxruntime).

Sessions take and return tensors in the *model's* layout and dtype, so verification and
accuracy code never deal with NHWC transposes or integer I/O: the conversion rules are the
ones written into the manifest (docs/bundle-format.md) and used by the device runner.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# The bundle-format rules (transpose by perm, quantize / dequantize) live once, in the device
# runner, which must stay self-contained; the build verifies with the very same code.
from edgekit.runner.edgekit_runner import from_artifact, reference_model, to_artifact
from edgekit.tensors import TensorSpec


def infer_perm(model_shape: tuple[int, ...], artifact_shape: tuple[int, ...]) -> list[int] | None:
    """The permutation with ``artifact = model.transpose(perm)``; None when identical.

    onnx2tf turns channel-first tensors into channel-last ones, the only layout change it makes.
    """
    model_shape, artifact_shape = tuple(model_shape), tuple(artifact_shape)
    if model_shape == artifact_shape:
        return None
    rank = len(model_shape)
    perm = [0, *range(2, rank), 1]
    if rank >= 3 and tuple(model_shape[i] for i in perm) == artifact_shape:
        return perm
    raise ValueError(f"artifact tensor shape {list(artifact_shape)} is no layout of model shape {list(model_shape)}")


def _io_entry(name: str, spec: TensorSpec, shape, dtype, quant: tuple[float, int] | None) -> dict:
    perm = infer_perm(spec.shape, tuple(int(d) for d in shape))
    quantization = {"scale": float(quant[0]), "zero_point": int(quant[1])} if quant and quant[0] else None
    layout = ("NHWC" if perm == [0, 2, 3, 1] else spec.layout) if len(spec.shape) == 4 else None
    return {"name": name, "model_name": spec.name, "shape": [int(d) for d in shape], "dtype": np.dtype(dtype).name,
            "layout": layout, "perm": perm, "quantization": quantization}


def _match(names: list[str], specs: list[TensorSpec]) -> list[TensorSpec]:
    """Pair artifact tensors with model tensors: by name where recognisable, else by order."""
    by_name = {s.name: s for s in specs}
    cleaned = [n.removeprefix("serving_default_").split(":")[0] for n in names]
    if all(c in by_name for c in cleaned):
        return [by_name[c] for c in cleaned]
    return list(specs)


class Session:
    """Common part: run one sample, run a batch of samples, time repeated runs."""

    inputs: list[dict]
    outputs: list[dict]

    def run(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = [to_artifact(sample[e["model_name"]], e) for e in self.inputs]
        raw = self._invoke(feeds)
        return {e["model_name"]: from_artifact(y, e).astype(np.float32) for e, y in zip(self.outputs, raw)}

    def run_batch(self, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(samples.values())))
        rows = [self.run({k: v[i] for k, v in samples.items()}) for i in range(count)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def latency_ms(self, sample: dict[str, np.ndarray], runs: int, warmup: int = 5) -> list[float]:
        feeds = [to_artifact(sample[e["model_name"]], e) for e in self.inputs]
        for _ in range(warmup):
            self._invoke(feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._invoke(feeds)
            times.append((time.perf_counter() - start) * 1e3)
        return times

    def _invoke(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class TFLiteSession(Session):
    """ai-edge-litert's Interpreter with an explicit thread count (its default is 1)."""

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int,
                 delegate: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self._in_idx, self._out_idx = [d["index"] for d in ins], [d["index"] for d in outs]
        self.inputs = [_io_entry(d["name"], s, d["shape"], d["dtype"], d["quantization"])
                       for d, s in zip(ins, _match([d["name"] for d in ins], inputs))]
        self.outputs = [_io_entry(d["name"], s, d["shape"], d["dtype"], d["quantization"])
                        for d, s in zip(outs, _match([d["name"] for d in outs], outputs))]

    def _invoke(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        for index, x in zip(self._in_idx, feeds):
            self.interpreter.set_tensor(index, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self._out_idx]


class ORTSession(Session):
    """onnxruntime on the CPU with the profile's thread count (``.onnx`` and ``.ort`` alike).

    ``reference=True`` runs ONNX Runtime's reference semantics instead of this CPU's fused int8
    kernels (graph optimizations at BASIC, integer ops emulated in float): how an artifact for
    another CPU is judged here (the device runner's ``reference_model``)."""

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int,
                 reference: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # spinning worker threads steal the CPU from whatever runs next (measured: other
        # artifacts timed 3-4x slower beside a spinning ORT session on a 2-core host)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = str(path)
        if reference:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            model = reference_model(Path(path))
            model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        self._names = [i.name for i in ins]
        self.inputs = [_io_entry(i.name, s, s.shape, s.dtype, None) for i, s in zip(ins, _match(self._names, inputs))]
        self.outputs = [_io_entry(o.name, s, s.shape, "float32", None)
                        for o, s in zip(outs, _match([o.name for o in outs], outputs))]

    def _invoke(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self._names, feeds)))


def open_session(path: Path, fmt: str, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int,
                 reference: bool = False) -> Session:
    """A host session for an artifact file of format ``tflite``, ``onnx`` or ``ort``
    (``reference``: ONNX Runtime's reference semantics, see :class:`ORTSession`)."""
    if fmt == "tflite":
        return TFLiteSession(path, inputs, outputs, threads)
    return ORTSession(path, inputs, outputs, threads, reference=reference)
