"""How much does the device runner itself cost? Runner vs a bare loop, and its RSS vs /usr/bin/time.

    python benchmarks/runner_overhead.py [--bundle DIR] [--repeats 7] [--runs 100]
        [--min-seconds 1] [--threads 1 2]

(a) Latency: for each artifact, `edgekit_runner.py --artifact X` against a bare loop in a fresh
    subprocess that does only what an app would (load, set the input once, then
    `t0; invoke(); t1` for LiteRT, `t0; session.run(); t1` for onnxruntime) with the same clock,
    threads, warm-up and stopping rule. Runner and bare runs alternate, `--repeats` times each,
    so a background load drifting over time hits both; the median and the best of the p50s
    are compared.
(b) Memory: the runner's `peak_rss` against GNU time's "Maximum resident set size" of the very
    same process (`/usr/bin/time -v`; `apt-get install -y time` if it is missing).

Without --bundle it builds the MobileNetV2-like 1x1x96x96 bundle of `_tiny_bundle.py` (~1-5 ms per
inference here). Writes benchmarks/results/runner_overhead.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GNU_TIME = "/usr/bin/time"

# The bare loop: no runner code at all, the same clock and stopping rule as the runner.
BARE = r'''
import json, sys, time
import numpy as np
bundle, file, threads, runs, warmup, min_s, max_s = sys.argv[1:8]
threads, runs, warmup, min_s, max_s = int(threads), int(runs), int(warmup), float(min_s), float(max_s)
man = json.load(open(f"{bundle}/manifest.json"))
art = [a for a in man["artifacts"] if a["file"] == file][0]
ent = art["inputs"][0]
x = np.load(f"{bundle}/golden.npz", allow_pickle=False)[ent["model_name"]][0]
if ent["perm"]:
    x = x.transpose(ent["perm"])
if ent["quantization"]:
    q = ent["quantization"]
    info = np.iinfo(ent["dtype"])
    x = np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max)
x = np.ascontiguousarray(x.astype(ent["dtype"]))
if art["format"] == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=f"{bundle}/{file}", num_threads=threads)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    call = it.invoke
else:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(f"{bundle}/{file}", so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    call = lambda: sess.run(None, feed)
for _ in range(warmup + 1):
    call()
clock, samples = time.perf_counter, []
start = clock()
while True:
    t0 = clock(); call(); t1 = clock()
    samples.append((t1 - t0) * 1e3)
    if t1 - start >= max_s or (len(samples) >= runs and t1 - start >= min_s):
        break
print(json.dumps({"p50": float(np.percentile(samples, 50)), "runs": len(samples)}))
'''

# Same process, same interpreter/session, alternating blocks: the runner's own measure() (memory
# sampler included) vs the bare loop. Host noise then hits both sides of every pair alike.
AB = BARE.split("for _ in range(warmup + 1):")[0] + r'''
import argparse, statistics
sys.path.insert(0, bundle)
import edgekit_runner as er
opts = argparse.Namespace(warmup=0, runs=runs, min_seconds=0.0, max_seconds=max_s)
for _ in range(warmup + 1):
    call()
pairs = []
for _ in range(int(sys.argv[8])):
    runner_p50 = er.measure(call, opts)[0]["latency_ms"]["p50"]
    bare_p50 = float(np.percentile(er.timed_loop(call, runs, 0.0, max_s)[0], 50))
    pairs.append((runner_p50, bare_p50))
print(json.dumps({"runner": statistics.median(r for r, _ in pairs),
                  "bare": statistics.median(b for _, b in pairs),
                  "pairwise": statistics.median(r / b for r, b in pairs)}))
'''


def gnu_time_available() -> bool:
    """GNU time (not the shell keyword) with -v support."""
    if not os.path.exists(GNU_TIME):
        return False
    proc = subprocess.run([GNU_TIME, "-v", "true"], capture_output=True, text=True)
    return "Maximum resident set size" in proc.stderr


def run_runner(bundle: Path, file: str, threads: int, opts: argparse.Namespace,
               use_time: bool) -> dict:
    """One `edgekit_runner.py --artifact` run; with GNU time wrapped around the same process."""
    with tempfile.TemporaryDirectory(prefix="ek_overhead_") as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(bundle / "edgekit_runner.py"), str(bundle), "--artifact", file,
               "--json", str(out), "--quiet", "--runs", str(opts.runs), "--min-seconds",
               str(opts.min_seconds), "--threads", str(threads)]
        proc = subprocess.run(([GNU_TIME, "-v"] if use_time else []) + cmd,
                              capture_output=True, text=True)
        if not out.is_file():
            raise SystemExit(f"runner failed on {file}: {proc.stderr[-2000:]}")
        result = json.loads(out.read_text())["results"][0]
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"p50": result["latency_ms"]["p50"], "runs": result["runs"],
            "peak_rss_mb": result["memory_mb"]["peak_rss"],
            "time_v_max_rss_mb": round(int(match.group(1)) / 1024.0, 2) if match else None}


def run_bare(bundle: Path, file: str, threads: int, opts: argparse.Namespace) -> dict:
    args = [str(bundle), file, str(threads), str(opts.runs), "5", str(opts.min_seconds), "60"]
    proc = subprocess.run([sys.executable, "-c", BARE, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"bare loop failed on {file}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ab(bundle: Path, file: str, threads: int, blocks: int = 20) -> dict:
    args = [str(bundle), file, str(threads), "50", "5", "0", "60", str(blocks)]
    proc = subprocess.run([sys.executable, "-c", AB, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"in-process A/B failed on {file}: {proc.stderr[-2000:]}")
    return {k: round(v, 4) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def measure(bundle: Path, file: str, threads: int, opts: argparse.Namespace,
            use_time: bool) -> dict[str, Any]:
    """Alternate runner and bare processes; compare the median and the best of their p50s
    (the best is the run least disturbed by other load on the host)."""
    runner: list[dict] = []
    bare: list[dict] = []
    for _ in range(opts.repeats):
        runner.append(run_runner(bundle, file, threads, opts, use_time))
        bare.append(run_bare(bundle, file, threads, opts))
    r50, b50 = [r["p50"] for r in runner], [round(b["p50"], 4) for b in bare]
    rss = [(r["peak_rss_mb"], r["time_v_max_rss_mb"]) for r in runner]
    return {"file": file, "threads": threads, "in_process_ab": run_ab(bundle, file, threads),
            "p50_runner_ms": statistics.median(r50), "p50_bare_ms": statistics.median(b50),
            "ratio_median": round(statistics.median(r50) / statistics.median(b50), 4),
            "best_p50_runner_ms": min(r50), "best_p50_bare_ms": min(b50),
            "ratio_best": round(min(r50) / min(b50), 4),
            "p50_runner_each": r50, "p50_bare_each": b50,
            "runs_runner_each": [r["runs"] for r in runner], "runs_bare_each": [b["runs"] for b in bare],
            "peak_rss_runner_mb": [r for r, _ in rss], "time_v_max_rss_mb": [t for _, t in rss],
            "rss_diff_mb_max": max((round(abs(r - t), 2) for r, t in rss if t is not None),
                                   default=None)}


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = ["# Runner overhead", "",
             f"Host: {env['machine']}, {env['cpu_count']} cores, Python {env['python']}; load average "
             f"{env['loadavg_before']:.1f} before, {env['loadavg_after']:.1f} after. The build machine "
             "is shared with other jobs, so absolute latencies are noisy: runner and bare processes "
             "alternate, and both the median and the best (least disturbed) p50 are compared.",
             f"Each process: p50 of >= {report['runs']} runs and >= {report['min_seconds']} s after 5 "
             f"warm-up runs; {report['repeats']} runner and {report['repeats']} bare processes per row.",
             "", "## (a) p50 latency: runner vs bare loop", "",
             "| artifact | threads | runner p50 ms (median) | bare p50 ms (median) | ratio | "
             "runner best p50 | bare best p50 | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['file']} | {r['threads']} | {r['p50_runner_ms']:.3f} | {r['p50_bare_ms']:.3f} | "
                     f"{r['ratio_median']:.3f} | {r['best_p50_runner_ms']:.3f} | "
                     f"{r['best_p50_bare_ms']:.3f} | {r['ratio_best']:.3f} |")
    lines += ["", "## (a2) same process, alternating blocks: runner's measure() vs bare loop", "",
              "One interpreter/session per row, 20 pairs of 50-run blocks; the runner side is its own "
              "`measure()` (memory sampler thread included), so only the runner's code differs.", "",
              "| artifact | threads | runner p50 ms | bare p50 ms | ratio of medians | median pairwise ratio |",
              "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        ab = r["in_process_ab"]
        lines.append(f"| {r['file']} | {r['threads']} | {ab['runner']:.3f} | {ab['bare']:.3f} | "
                     f"{ab['runner'] / ab['bare']:.3f} | {ab['pairwise']:.3f} |")
    lines += ["", "## (b) peak RSS: runner vs /usr/bin/time -v (same process)", ""]
    if not report["gnu_time"]:
        lines.append("GNU time not found at /usr/bin/time (`apt-get install -y time`): not measured.")
        return "\n".join(lines) + "\n"
    lines += ["| artifact | threads | runner peak_rss MB | time -v max RSS MB | max abs diff MB |",
              "|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['file']} | {r['threads']} | "
                     f"{', '.join(f'{v:.1f}' for v in r['peak_rss_runner_mb'])} | "
                     f"{', '.join(f'{v:.1f}' for v in r['time_v_max_rss_mb'])} | {r['rss_diff_mb_max']:.2f} |")
    lines += ["", "The runner reads its peak at the end of the timed runs; GNU time sees the whole "
              "process, including the golden replay and the report written after them."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="existing bundle (default: build the bench one)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    opts = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp = None
    bundle = opts.bundle
    if bundle is None:
        sys.path.insert(0, str(HERE))
        from _tiny_bundle import make_bundle

        tmp = tempfile.mkdtemp(prefix="ek_bench_bundle_")
        bundle = make_bundle(Path(tmp) / "bench", kind="bench", threads=max(opts.threads))
    bundle = bundle.resolve()
    use_time = gnu_time_available()
    env = {"machine": platform.machine(), "cpu_count": os.cpu_count(),
           "python": platform.python_version(), "loadavg_before": os.getloadavg()[0]}
    files = [a["file"] for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]]
    rows = [measure(bundle, f, t, opts, use_time) for f in files for t in opts.threads]
    env["loadavg_after"] = os.getloadavg()[0]
    report = {"bundle": str(bundle), "environment": env, "gnu_time": use_time,
              "repeats": opts.repeats, "runs": opts.runs, "min_seconds": opts.min_seconds,
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "runner_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "runner_overhead.md").write_text(to_markdown(report))
    print(to_markdown(report))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
