"""The host profile's ONNX Runtime int8 scheme against its fp32, side by side in one run.

The host profile quantizes U8S8 (uint8 activations, int8 weights, per-channel) with full 8-bit
weights on CPUs with VNNI/AMX and 7-bit weights (reduce_range) without, because ORT's u8s8
kernel saturates in int16 on AVX2-only CPUs (targets/host.toml). Both variants are timed here
beside fp32, interleaved, on MobileNetV2-1.0 224 (benchmarks/mobilenet_v2.py), and their output
cosine to fp32 is measured. Only the variant this host's CPU would pick is what a host build ships;
the other is measured for comparison. The figures are for THIS host's CPU (recorded in the
result); an AVX2-only CPU's speed cannot be measured under emulation.

    python benchmarks/host_int8_benchmark.py [--rounds 7] [--runs 20]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _build(work: Path) -> Path:
    from edgekit import BuildOptions, build

    out = work / "host"
    build(BuildOptions(target="host", model=f"{HERE / 'mobilenet_v2.py'}:factory", out=out, latency_runs=0, allow_drift=True))
    return out


def _variants(bundle: Path, work: Path) -> dict[str, Path]:
    """fp32, and the host scheme with full-range and with 7-bit weights, from the same fp32 ONNX."""
    from edgekit.calibration import load_named
    from edgekit.quantize.ort_static import quantize_qdq, reduce_range_for
    from edgekit.targets import load_target
    from edgekit.tensors import TensorSpec

    scheme = load_target("host").ort.int8
    samples = load_named("photos", [TensorSpec("input", (1, 3, 224, 224), "float32", "NCHW")]).calibration
    files = {"fp32": bundle / "model_fp32.onnx"}
    for label, reduce in (("int8 full range", False), ("int8 reduce_range", True)):
        target = work / f"{label.replace(' ', '_')}.onnx"
        quantize_qdq(files["fp32"], target, samples, dataclasses.replace(scheme, full_range_features=(), reduce_range=reduce), work)
        files[label] = target
    files["chosen here"] = files["int8 reduce_range" if reduce_range_for(scheme) else "int8 full range"]
    return files


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(files: dict[str, Path], rounds: int, runs: int, threads: int) -> dict:
    sessions = {k: _session(p, threads) for k, p in files.items() if k != "chosen here"}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    outputs = {k: s.run(None, {"input": x})[0] for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):  # interleaved: every variant sees the same machine state
        for label, sess in sessions.items():
            for _ in range(3):
                sess.run(None, {"input": x})
            t0 = time.perf_counter()
            for _ in range(runs):
                sess.run(None, {"input": x})
            times[label].append((time.perf_counter() - t0) / runs * 1e3)
    ref = outputs["fp32"].ravel().astype(np.float64)
    rows = {}
    for label, ms in times.items():
        out = outputs[label].ravel().astype(np.float64)
        rows[label] = {"p50_ms_of_round_means": round(statistics.median(ms), 3), "ratio_to_fp32": None,
                       "cosine_to_fp32": round(float(out @ ref / np.linalg.norm(out) / np.linalg.norm(ref)), 5),
                       "bytes": files[label].stat().st_size}
    for row in rows.values():
        row["ratio_to_fp32"] = round(row["p50_ms_of_round_means"] / rows["fp32"]["p50_ms_of_round_means"], 3)
    return rows


def main() -> int:
    from edgekit.quantize.ort_static import reduce_range_for
    from edgekit.targets import load_target
    from edgekit.verify import hostinfo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "host_int8_benchmark.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgekit_hostbench_") as tmp:
        work = Path(tmp)
        files = _variants(_build(work), work)
        rows = measure(files, args.rounds, args.runs, args.threads)
    result = {"model": "MobileNetV2-1.0 224 (random weights, BN calibrated on photos)", "threads": args.threads,
              "rounds": args.rounds, "runs_per_round": args.runs, "load_average_before": round(load, 2),
              "host": hostinfo.describe(), "host_build_picks_reduce_range": reduce_range_for(load_target("host").ort.int8),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# host profile ORT int8 vs fp32 ({result['model']})", "",
             f"CPU: {result['host']['cpu']}, int8 ISA {result['host']['int8_isa']}; {args.threads} threads; "
             f"load average before {result['load_average_before']}; a host build here picks "
             f"{'reduce_range' if result['host_build_picks_reduce_range'] else 'full-range'} weights.", "",
             "| variant | p50 ms | vs fp32 | cosine to fp32 | bytes |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['p50_ms_of_round_means']} | {r['ratio_to_fp32']}x | {r['cosine_to_fp32']} | {r['bytes']:,} |"
              for k, r in rows.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
