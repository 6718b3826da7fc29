"""Measure edgekit's transformer quantization schemes on all-MiniLM-L6-v2 and TinyGPT.

Run from the repository root (slow: a few minutes; one heavy conversion at a time)::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/measure_transformers.py [--only minilm|tinygpt]
        [--work DIR] [--json results.json] [--threads 2] [--runs 25]

MiniLM: the held-out split of the ``text`` set (never used for calibration), embedding cosine
to fp32 PyTorch per sentence (mean, min), bytes, and host latency (ms per sentence, median of
``--runs``, every artifact run in turn in each round, same process). TinyGPT: perplexity on
held-out source files, its change vs fp32 PyTorch, next-byte top-1 agreement with fp32
PyTorch, bytes, latency. Prints markdown tables; ``--json`` keeps the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from edgekit.quantize.onnx_rewrites import dedupe_value_names
from edgekit.quantize.ort_dynamic import quantize_dynamic_int8
from edgekit.quantize.ort_int4 import quantize_int4_weights
from edgekit.quantize.ort_static_transformer import StaticTransformerOptions, quantize_static_transformer
from edgekit.text import load_sentences, next_token_agreement, perplexity, tokenize

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def ort_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # ORT's pool threads spin after each run; in an interleaved same-process measurement they take
    # the cores from the next artifact (measured: TFLite fp32 34 ms with spinning ORT sessions
    # alive, 9 ms without) and from each other on a loaded 2-core host.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda feed: session.run(None, {n: feed[n] for n in names})[0]


def tflite_runner(path: Path, threads: int) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=threads)  # LiteRT defaults to 1 thread
    interpreter.allocate_tensors()
    inputs, output = interpreter.get_input_details(), interpreter.get_output_details()[0]

    def run(feed):
        for detail in inputs:
            name = detail["name"].removeprefix("serving_default_").split(":")[0]
            interpreter.set_tensor(detail["index"], feed[name].astype(detail["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(output["index"]).copy()

    return run


def runner(path: Path, threads: int) -> Runner:
    return tflite_runner(path, threads) if path.suffix == ".tflite" else ort_runner(path, threads)


def interleaved_latency(runners: dict[str, Runner], feeds: list[dict], runs: int) -> dict[str, float]:
    """Median ms per call: each round runs every artifact once on the same input."""
    for fn in runners.values():  # warm-up
        for feed in feeds[:3]:
            fn(feed)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(runs):
        feed = feeds[r % len(feeds)]
        for name, fn in runners.items():
            start = time.perf_counter()
            fn(feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def export(model: torch.nn.Module, example: tuple, path: Path, inputs: list[str], outputs: list[str]) -> Path:
    torch.onnx.export(model, example, str(path), dynamo=True, external_data=False, input_names=inputs, output_names=outputs)
    onnx.save(dedupe_value_names(onnx.load(str(path))), str(path))  # exporter names aten.embedding "embedding"
    return path


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def minilm_artifacts(work: Path, calibration: dict[str, np.ndarray]) -> dict[str, Path]:
    """Export, quantize and convert MiniLM; returns ``{row name: file}`` (fp32 first per runtime)."""
    from edgekit.examples import minilm
    from edgekit.quantize.tflite_variants import convert_onnx, tflite_dynamic_range, tflite_fp16, tflite_int8_float_fallback

    model, example = minilm.factory()
    fp32 = export(model, example, work / "minilm_fp32.onnx", minilm.INPUT_NAMES, minilm.OUTPUT_NAMES)
    files = {"ORT fp32": fp32,
             "ORT dynamic int8 (per-channel)": quantize_dynamic_int8(fp32, work / "minilm_dyn.onnx"),
             "ORT static QDQ int8 (sensitive float, GELU-fed weight-only)":
                 quantize_static_transformer(fp32, work / "minilm_qdq.onnx", calibration),
             "ORT static QDQ int8 (GELU-fed dynamic)":
                 quantize_static_transformer(fp32, work / "minilm_qdq_dyn.onnx", calibration,
                                             options=StaticTransformerOptions(gelu_fed="dynamic")),
             "ORT int4 weight-only (MatMulNBits)": quantize_int4_weights(fp32, work / "minilm_int4.onnx")}
    tf_dir = convert_onnx(fp32, work / "onnx2tf", {k: v[:16] for k, v in calibration.items()})
    files["TFLite fp32 (onnx2tf)"] = tf_dir / "minilm_fp32_float32.tflite"
    files["TFLite dynamic-range int8"] = tflite_dynamic_range(tf_dir, work / "minilm_dr.tflite")
    files["TFLite fp16"] = tflite_fp16(tf_dir, work / "minilm_fp16.tflite")
    files["TFLite int8, float fallback (selective)"] = tflite_int8_float_fallback(tf_dir, work / "minilm_int8.tflite",
                                                                                   calibration)
    return files


def measure_minilm(work: Path, threads: int, runs: int, calibration_samples: int) -> list[dict]:
    from edgekit.examples import minilm

    torch.set_num_threads(1)
    tokenizer = minilm.load_tokenizer()
    calibration = tokenize(load_sentences("calibration")[:calibration_samples], tokenizer, minilm.SEQ_LEN)
    heldout = tokenize(load_sentences("heldout"), tokenizer, minilm.SEQ_LEN)
    count = len(heldout["input_ids"])
    feeds = [{k: v[i] for k, v in heldout.items()} for i in range(count)]
    model, _ = minilm.factory()
    with torch.no_grad():
        reference = np.stack([model(*(torch.from_numpy(f[k]) for k in minilm.INPUT_NAMES)).numpy() for f in feeds])
    files = minilm_artifacts(work, calibration)
    runners = {name: runner(path, threads) for name, path in files.items()}
    rows = []
    for name, fn in runners.items():
        cos = _cos(np.stack([fn(f) for f in feeds]), reference)
        rows.append({"artifact": name, "file": files[name].name, "bytes": files[name].stat().st_size,
                     "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "sentences": count})
    latency = interleaved_latency(runners, feeds, runs)
    for row in rows:
        row["ms"] = latency[row["artifact"]]
        base = "ORT fp32" if row["artifact"].startswith("ORT") else "TFLite fp32 (onnx2tf)"
        row["bytes_ratio"] = row["bytes"] / files[base].stat().st_size
        row["latency_ratio"] = row["ms"] / latency[base]
    return rows


def measure_tinygpt(work: Path, threads: int, runs: int, windows_count: int) -> list[dict]:
    from edgekit.examples.tinygpt import model as tinygpt
    from edgekit.examples.tinygpt.corpus import corpus_bytes, eval_windows

    torch.set_num_threads(1)
    windows = eval_windows(corpus_bytes()[1], count=windows_count)
    model, example = tinygpt.factory()
    with torch.no_grad():
        reference = np.stack([model(torch.from_numpy(w[None, :-1])).numpy()[0] for w in windows])
    table = {w[:-1].tobytes(): x[None] for w, x in zip(windows, reference)}
    ref_ppl = perplexity(lambda x: table[x[0].tobytes()], windows)
    fp32 = export(model, example, work / "tinygpt_fp32.onnx", tinygpt.INPUT_NAMES, tinygpt.OUTPUT_NAMES)
    files = {"ORT fp32": fp32, "ORT dynamic int8 (per-channel)": quantize_dynamic_int8(fp32, work / "tinygpt_dyn.onnx"),
             "ORT int4 weight-only (MatMulNBits)": quantize_int4_weights(fp32, work / "tinygpt_int4.onnx")}
    runners = {name: runner(path, threads) for name, path in files.items()}
    feeds = [{"input_ids": w[None, :-1]} for w in windows]
    rows = [{"artifact": "PyTorch fp32", "perplexity": ref_ppl, "ppl_delta_pct": 0.0, "top1_agreement": 1.0,
             "windows": len(windows)}]
    for name, fn in runners.items():
        logits = np.stack([fn(f)[0] for f in feeds])
        lookup = {w[:-1].tobytes(): x[None] for w, x in zip(windows, logits)}
        ppl = perplexity(lambda x, lookup=lookup: lookup[x[0].tobytes()], windows)
        rows.append({"artifact": name, "file": files[name].name, "bytes": files[name].stat().st_size,
                     "bytes_ratio": files[name].stat().st_size / fp32.stat().st_size, "perplexity": ppl,
                     "ppl_delta_pct": 100 * (ppl / ref_ppl - 1), "top1_agreement": next_token_agreement(logits, reference),
                     "windows": len(windows)})
    latency = interleaved_latency(runners, feeds, runs)
    for row in rows[1:]:
        row["ms"] = latency[row["artifact"]]
        row["latency_ratio"] = row["ms"] / latency["ORT fp32"]
    return rows


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], fmt) if key in row else "-" for _, key, fmt in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["minilm", "tinygpt"])
    parser.add_argument("--work", type=Path, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--windows", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="edgekit_measure_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results: dict = {"host": platform.node(), "python": platform.python_version(), "threads": args.threads,
                         "runs": args.runs}
        if args.only in (None, "tinygpt"):
            results["tinygpt"] = measure_tinygpt(work, args.threads, args.runs, args.windows)
            print(_table(results["tinygpt"], [("artifact", "artifact", "s"), ("perplexity", "perplexity", ".3f"),
                                              ("ppl delta %", "ppl_delta_pct", "+.2f"), ("top-1 agree", "top1_agreement", ".4f"),
                                              ("bytes", "bytes", ",d"), ("x fp32", "bytes_ratio", ".3f"),
                                              ("ms", "ms", ".2f"), ("x fp32 ms", "latency_ratio", ".2f")]), flush=True)
        if args.only in (None, "minilm"):
            results["minilm"] = measure_minilm(work, args.threads, args.runs, args.calibration_samples)
            print(_table(results["minilm"], [("artifact", "artifact", "s"), ("cos mean", "cosine_mean", ".4f"),
                                             ("cos min", "cosine_min", ".4f"), ("bytes", "bytes", ",d"),
                                             ("x fp32", "bytes_ratio", ".3f"), ("ms", "ms", ".2f"),
                                             ("x fp32 ms", "latency_ratio", ".2f")]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
