"""Build benchmark: the bundled example and MobileNetV2-1.0 (224x224) for the `host` target.

For each model, one `edgekit build` in a fresh process: build wall time and peak memory (max
RSS of the largest process, converters included), artifact sizes, and host latency of every
artifact (same runtime settings, profile threads, median of >= 50 runs timed in interleaved
rounds by the build's measure stage). Everything is reported as a ratio to the fp32 artifact
of the same format, measured in the same run.

    .venv/bin/python benchmarks/build_benchmark.py [--runs 100] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {
    "digits-cnn (example)": None,
    # random seeded weights, BN calibrated on real photos: latency and size are what matter here,
    # so verification drift is allowed and reported as is
    "mobilenet_v2-1.0 224": f"{HERE / 'mobilenet_v2.py'}:factory",
}


def build(model: str | None, target: str, runs: int, out: Path) -> tuple[dict, float, float]:
    """Run one build in a child process; return (manifest, wall seconds, peak RSS MB)."""
    cmd = [sys.executable, "-m", "edgekit", "build", *([model] if model else []), "--target", target, "--out", str(out),
           "--json", "--allow-drift", "--latency-runs", str(runs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    if result.returncode not in (0, 4):  # 4: drift allowed and reported
        raise SystemExit(f"build failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout), wall, peak


def rows_for(name: str, manifest: dict, wall: float, peak: float) -> list[dict]:
    fp32 = {a["format"]: a for a in manifest["artifacts"] if a["precision"] == "fp32"}
    rows = []
    for a in manifest["artifacts"]:
        base = fp32.get(a["format"]) or fp32.get("onnx") or fp32.get("tflite")
        lat = a["host_latency_ms"]
        rows.append({"model": name, "artifact": a["file"], "precision": a["precision"], "bytes": a["bytes"],
                     "size_vs_fp32": a["bytes"] / base["bytes"], "p50_ms": lat["p50"], "runs": lat["runs"],
                     "threads": lat["threads"], "latency_vs_fp32": lat["p50"] / base["host_latency_ms"]["p50"],
                     "cosine": a["verification"]["cosine"], "verified": a["verification"]["passed"],
                     "accuracy": (manifest.get("accuracy") or {}).get("per_artifact", {}).get(a["file"]),
                     "build_s": wall, "build_peak_rss_mb": peak})
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| model | artifact | size | size vs fp32 | host p50 ms | latency vs fp32 | cosine | accuracy | build s | build peak MB |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        acc = f"{r['accuracy'] * 100:.2f}%" if r["accuracy"] is not None else "-"
        head += (f"| {r['model']} | {r['artifact']} | {r['bytes'] / 1e6:.2f} MB | {r['size_vs_fp32']:.2f}x | {r['p50_ms']:.3f} "
                 f"| {r['latency_vs_fp32']:.2f}x | {r['cosine']:.4f} | {acc} | {r['build_s']:.0f} | {r['build_peak_rss_mb']:.0f} |\n")
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per artifact (>= 50)")
    parser.add_argument("--target", default="host")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, model) in enumerate(MODELS.items()):
            manifest, wall, peak = build(model, args.target, max(50, args.runs), Path(tmp) / str(index))
            rows += rows_for(name, manifest, wall, peak)
            print(f"{name}: built in {wall:.0f} s, peak {peak:.0f} MB", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"target": args.target, "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    (args.out / "build_benchmark.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "build_benchmark.md").write_text(f"# Build benchmark ({args.target}, {os.cpu_count()} cores)\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
