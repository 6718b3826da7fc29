"""Hand-made edgekit bundles for the runner's tests and benchmark.

The real `edgekit build` is written elsewhere; this module builds a small but REAL bundle by hand,
following docs/bundle-format.md, so the device runner can be tested against real artifacts:

- ``tiny``:  a small CNN trained in a few seconds on sklearn's 8x8 digits (1x1x8x8 -> 10 logits).
- ``bench``: a MobileNetV2-like conv net at 1x1x96x96 (random weights), a few ms per inference,
  so the runner-overhead benchmark measures something larger than timer noise.

Artifacts: ``model_fp32.onnx``, ``model_fp32.ort`` (onnxruntime), ``model_fp32.tflite`` and
``model_int8.tflite`` (full integer, int8 I/O, both via onnx2tf). Test helper only: never imported
by the edgekit package.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNNER_SRC = REPO / "edgekit" / "runner" / "edgekit_runner.py"
NHWC = [0, 2, 3, 1]  # artifact = model_tensor.transpose(NHWC) for a 4-D NCHW input

# Tolerances written to the manifest, per precision (the runner checks against them).
TOLERANCE = {
    "fp32": {"max_abs_err": 1e-3, "min_cosine": 0.9999, "min_top1_agreement": 0.99},
    "int8": {"max_abs_err": None, "min_cosine": 0.98, "min_top1_agreement": 0.9},
}


def _tiny_model() -> Any:
    """The 8x8 digits CNN: two convs, global average pool, a linear head."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )


def _bench_model() -> Any:
    """MobileNetV2-like: strided stem, depthwise-separable blocks, pool, head (~1-5 ms here)."""
    import torch

    def block(cin: int, cout: int, stride: int) -> list:
        return [torch.nn.Conv2d(cin, cin * 4, 1), torch.nn.BatchNorm2d(cin * 4), torch.nn.ReLU6(),
                torch.nn.Conv2d(cin * 4, cin * 4, 3, stride, 1, groups=cin * 4),
                torch.nn.BatchNorm2d(cin * 4), torch.nn.ReLU6(),
                torch.nn.Conv2d(cin * 4, cout, 1), torch.nn.BatchNorm2d(cout)]

    layers = [torch.nn.Conv2d(1, 32, 3, 2, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU6()]
    for cin, cout, stride in [(32, 32, 1), (32, 48, 2), (48, 48, 1), (48, 64, 2), (64, 64, 1),
                              (64, 96, 1), (96, 128, 2)]:
        layers += block(cin, cout, stride)
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, 10)]
    return torch.nn.Sequential(*layers)


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as float32 NCHW in [0, 1], shuffled with `seed`."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], data.target[order].astype(np.int64)


def _train_tiny(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """200 Adam steps (~92 % test accuracy, so top-1 agreement is meaningful). One torch thread:
    for a model this small, more threads only add contention (16 s instead of 0.5 s here)."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    try:
        for _ in range(200):
            idx = torch.randint(0, len(xt), (256,))
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _model_and_data(kind: str, samples: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """(eval model, golden inputs [N,1,C,H,W], calibration inputs [M,C,H,W])."""
    import torch

    torch.manual_seed(seed)
    if kind == "tiny":
        x, y = _digits(seed)
        model = _tiny_model()
        _train_tiny(model, x[:1200], y[:1200])
        golden, calib = x[1200:1200 + samples], x[:128]
    elif kind == "bench":
        model = _bench_model().eval()
        rng = np.random.default_rng(seed)
        golden = rng.random((samples, 1, 96, 96), dtype=np.float32)
        calib = rng.random((32, 1, 96, 96), dtype=np.float32)
    else:
        raise ValueError(f"unknown bundle kind {kind!r} (tiny | bench)")
    return model.eval(), golden[:, None], calib


def _export(model: Any, example: np.ndarray, work: Path) -> tuple[Path, Path]:
    """torch -> single-file fp32 ONNX (dynamo) -> ORT format, in `work`."""
    import onnxruntime as ort
    import torch

    onnx_path, ort_path = work / "model.onnx", work / "model.ort"
    torch.onnx.export(model, (torch.from_numpy(example),), str(onnx_path), dynamo=True,
                      input_names=["input"], output_names=["logits"], external_data=False)
    # ORT writes the optimized graph in ORT format when asked to: the in-process equivalent of
    # `python -m onnxruntime.tools.convert_onnx_models_to_ort` (BASIC keeps it portable).
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(ort_path)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    return onnx_path, ort_path


def _to_tflite(onnx_path: Path, calib_nchw: np.ndarray, work: Path) -> tuple[Path, Path]:
    """onnx2tf: fp32 and full-integer (int8 I/O) TFLite; calibration passed so it stays offline."""
    import onnx2tf

    npy = work / "calib_nhwc.npy"
    np.save(npy, calib_nchw.transpose(0, 2, 3, 1).astype(np.float32))
    out = work / "tf"
    onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out),
                    output_integer_quantized_tflite=True, non_verbose=True,
                    custom_input_op_name_np_data_path=[["input", str(npy), 0.0, 1.0]])
    return out / "model_float32.tflite", out / "model_full_integer_quant.tflite"


def _io_entries(details: list[dict], model_name: str, perm: list[int] | None,
                layout: str | None) -> list[dict]:
    """Manifest I/O entries from TFLite tensor details (single input / single output models)."""
    entries = []
    for d in details:
        scale, zero_point = d["quantization"]
        entries.append({
            "name": d["name"], "model_name": model_name, "shape": [int(s) for s in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name, "layout": layout, "perm": perm,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}
            if scale else None})
    return entries


def _tflite_io(path: Path) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    return (_io_entries(interp.get_input_details(), "input", NHWC, "NHWC"),
            _io_entries(interp.get_output_details(), "logits", None, None))


def _ort_io(path: Path, shape_in: list[int], shape_out: list[int]) -> tuple[list[dict], list[dict]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    entry = {"dtype": "float32", "layout": None, "perm": None, "quantization": None}
    return ([dict(entry, name=sess.get_inputs()[0].name, model_name="input", shape=shape_in,
                  layout="NCHW")],
            [dict(entry, name=sess.get_outputs()[0].name, model_name="logits", shape=shape_out)])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference_verification(bundle: Path, art: dict, golden: dict) -> dict:
    """An independent, minimal re-implementation of the doc's feed/read rules (ORT or LiteRT),
    so tests can cross-check the runner's numbers against it."""
    outs = []
    inp, outp = art["inputs"][0], art["outputs"][0]
    xs = golden["input"]
    if art["runtime"] == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(bundle / art["file"]), providers=["CPUExecutionProvider"])
        outs = [sess.run(None, {inp["name"]: x})[0] for x in xs]
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(bundle / art["file"]), num_threads=1)
        it.allocate_tensors()
        for x in xs:
            x = x.transpose(inp["perm"])
            if inp["quantization"]:
                q = inp["quantization"]
                x = np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            y = it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float32)
            if outp["quantization"]:
                q = outp["quantization"]
                y = (y - q["zero_point"]) * q["scale"]
            outs.append(y)
    got, ref = np.stack(outs).astype(np.float64), golden["logits"].astype(np.float64)
    cos = float(np.dot(got.ravel(), ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    top1 = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    return {"max_abs_err": float(np.abs(got - ref).max()), "cosine": cos, "top1_agreement": top1}


def make_bundle(out_dir: Path, kind: str = "tiny", samples: int = 32, threads: int = 2,
                seed: int = 0) -> Path:
    """Write a schema-1 bundle of `kind` into `out_dir` (created); return it."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, golden_x, calib = _model_and_data(kind, samples, seed)
    with torch.no_grad():
        golden_y = np.stack([model(torch.from_numpy(x)).numpy() for x in golden_x])
    golden = {"input": golden_x, "logits": golden_y.astype(np.float32)}
    np.savez(out_dir / "golden.npz", **golden)
    shape_in, shape_out = list(golden_x.shape[1:]), list(golden_y.shape[1:])

    with tempfile.TemporaryDirectory(prefix="ek_bundle_") as tmp:
        work = Path(tmp)
        onnx_path, ort_path = _export(model, golden_x[0], work)
        tfl_fp32, tfl_int8 = _to_tflite(onnx_path, calib, work)
        sources = [("model_fp32.onnx", onnx_path, "onnx", "fp32", "onnxruntime"),
                   ("model_fp32.ort", ort_path, "ort", "fp32", "onnxruntime"),
                   ("model_fp32.tflite", tfl_fp32, "tflite", "fp32", "litert"),
                   ("model_int8.tflite", tfl_int8, "tflite", "int8", "litert")]
        for name, src, *_ in sources:
            shutil.copyfile(src, out_dir / name)

    artifacts = []
    for name, _src, fmt, precision, runtime in sources:
        path = out_dir / name
        io = _ort_io(path, shape_in, shape_out) if runtime == "onnxruntime" else _tflite_io(path)
        art = {"file": name, "format": fmt, "precision": precision, "runtime": runtime,
               "bytes": path.stat().st_size, "sha256": _sha256(path),
               "inputs": io[0], "outputs": io[1], "tolerance": dict(TOLERANCE[precision]),
               "compatibility": None}
        art["verification"] = _reference_verification(out_dir, art, golden)
        artifacts.append(art)

    manifest = {
        "schema": 1, "edgekit_version": "0.1.0", "target": "host-test",
        "task": "classification",
        "inputs": [{"name": "input", "shape": shape_in, "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": shape_out, "dtype": "float32"}],
        "golden": {"file": "golden.npz", "samples": int(len(golden_x)), "sha256": _sha256(out_dir / "golden.npz")},
        "runtime_defaults": {"tflite": {"delegate": "xnnpack", "threads": threads},
                             "ort": {"provider": "CPUExecutionProvider", "threads": threads}},
        "artifacts": artifacts, "extra_files": [],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copyfile(RUNNER_SRC, out_dir / "edgekit_runner.py")
    (out_dir / "README.md").write_text(
        f"Hand-made {kind} test bundle. Run: python edgekit_runner.py .\n")
    return out_dir


if __name__ == "__main__":  # pragma: no cover - manual use: python _tiny_bundle.py OUT [kind]
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(make_bundle(Path(sys.argv[1]), *(sys.argv[2:3] or ["tiny"])))
