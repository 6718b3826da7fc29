"""edgekit search on MobileNetV2 (host profile): its best int8 TFLite against the default build's
and onnx2tf's own full-int8 of the same model, timed side by side in one run.

    python benchmarks/search_mobilenet.py [--trials 8] [--workers 2] [--rounds 7] [--runs 20] [--threads 2]

1. ``edgekit build`` of benchmarks/mobilenet_v2.py for the host profile: the default int8 TFLite
   and its output cosine to the PyTorch model on the photo set's verification images.
2. onnx2tf's own full-int8: the model exported by ``torch.onnx.export`` and converted by the
   onnx2tf CLI with its defaults (``-oiqt``; only ``-cind`` added, the same calibration photos,
   so it never downloads its sample images).
3. ``edgekit search`` (``--no-compress``: random weights have no training data),
   ``--min-cosine`` the default int8's cosine on the search half, so a kept trial is at least as
   accurate there; the table gives every file's cosine on all 8 verification photos.
4. fp32, the three int8 files: LiteRT with XNNPACK, ``--threads`` threads, interleaved rounds
   (every file sees the same machine state), the median of the round means; cosine to fp32.

Writes benchmarks/results/search_mobilenet.{json,md} with the host's CPU flags and the load
average before the timing: measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
MODEL = f"{HERE / 'mobilenet_v2.py'}:factory"


def photos() -> dict[str, np.ndarray]:
    """The photo set's calibration and verification images, ``[N, 1, 3, 224, 224]`` float32."""
    from edgekit.calibration import load_named
    from edgekit.tensors import TensorSpec

    data = load_named("photos", [TensorSpec("input", (1, 3, 224, 224), "float32", "NCHW")])
    return {"calibration": data.calibration["input"], "verification": data.verification["input"]}


#: random weights are int8-hostile (cosine about 0.97 where a trained net gives 0.99+): the host
#: profile with its fp16/int8 tolerances loosened, as its verification error suggests, so the
#: default build and every trial verify; the search's --min-cosine is what judges them
LOOSE = {"fp16": {"max_rel_err": 0.05, "min_top1_agreement": 0.0},
         "int8": {"max_rel_err": 0.5, "min_cosine": 0.9, "min_top1_agreement": 0.0}}


def loose_host(work: Path) -> Path:
    import tomllib

    from edgekit.paths import targets_dir
    from edgekit.search.space import to_toml
    from edgekit.targets import merge_overlay

    profile = tomllib.loads((targets_dir() / "host.toml").read_text(encoding="utf-8"))
    path = work / "host-random-weights.toml"
    path.write_text(to_toml(merge_overlay(profile, {"name": "host-random-weights", "tolerance": LOOSE})), encoding="utf-8")
    return path


def default_build(work: Path, target: Path) -> dict:
    from edgekit import BuildOptions, build
    from edgekit.options import QualitySplit

    # judged on the search half, as the search judges its trials: the budget is the default's own figure there
    return build(BuildOptions(target=str(target), model=MODEL, out=work / "default", latency_runs=0,
                              quality_split=QualitySplit.SEARCH))


def onnx2tf_own(work: Path, calibration: np.ndarray) -> Path:
    """onnx2tf's full-integer model of a plain torch.onnx.export of the same model."""
    import torch

    sys.path.insert(0, str(HERE))
    from mobilenet_v2 import factory

    model, example = factory()
    source = work / "mobilenet_v2.onnx"
    torch.onnx.export(model, example, str(source), input_names=["input"], output_names=["logits"], opset_version=18,
                      dynamo=False)
    samples = work / "calibration_nhwc.npy"
    np.save(samples, calibration[:, 0].transpose(0, 2, 3, 1).astype(np.float32))
    out = work / "onnx2tf_own"
    out.mkdir()
    # the sample file onnx2tf would download for an RGB input, written from the same photos (no network)
    from edgekit.quantize.tflite_variants import _offline_sample

    _offline_sample(out, calibration)
    subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(source), "-o", str(out), "-oiqt", "-n",
                    "-cind", "input", str(samples), "0.0", "1.0"],
                   check=True, cwd=out, stdout=subprocess.DEVNULL)
    return out / "mobilenet_v2_full_integer_quant.tflite"


def run_search(work: Path, target: Path, min_cosine: float, trials: int, workers: int) -> dict:
    from edgekit.budget import MaxDrop, Metric
    from edgekit.search import SearchOptions, search

    options = SearchOptions(target=str(target), model=MODEL, max_drop=MaxDrop(Metric.COSINE, min_cosine), trials=trials,
                            workers=workers, out=work / "search", compress=False, latency_runs=20)
    return search(options, lambda line: print(line, file=sys.stderr))


def chosen_file(summary: dict) -> Path | None:
    """The search's choice when it is a TFLite int8 file (a trial's, or the default's when no
    trial beat it on size and latency), else None."""
    chosen = summary["chosen"]
    if chosen is None or chosen["heldout"]["artifact"] != "model_int8.tflite":
        return None
    return Path(chosen["bundle"]) / "model_int8.tflite"


def fastest_tflite_trial(summary: dict, work: Path) -> tuple[dict | None, Path | None]:
    """The feasible TFLite int8 trial with the lowest latency as the search measured it (two
    trials at a time: the race at the end is what the choice rests on)."""
    rows = [r for r in summary["trials"] if r["state"] == "COMPLETE" and r["feasible"] and r["duplicate_of"] is None
            and r["artifact"] == "model_int8.tflite"]
    if not rows:
        return None, None
    best = min(rows, key=lambda r: r["latency_ms"])
    return best, work / "search" / "trials" / f"{best['number']:04d}" / "bundle" / "model_int8.tflite"


def _interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, x_nchw: np.ndarray) -> np.ndarray:
    """One image through a TFLite model (NHWC input, quantized when the model's input is)."""
    detail = interpreter.get_input_details()[0]
    x = x_nchw.transpose(0, 2, 3, 1) if detail["shape"][-1] == 3 else x_nchw
    scale, zero = detail["quantization"]
    if detail["dtype"] != np.float32:
        x = np.clip(np.round(x / scale + zero), np.iinfo(detail["dtype"]).min, np.iinfo(detail["dtype"]).max)
    interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    y = interpreter.get_tensor(out["index"]).astype(np.float64)
    scale, zero = out["quantization"]
    return (y - zero) * scale if out["dtype"] != np.float32 else y


def measure(files: dict[str, Path], images: np.ndarray, rounds: int, runs: int, threads: int) -> dict:
    import torch
    from mobilenet_v2 import factory

    model, _ = factory()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(x)).numpy() for x in images]).astype(np.float64)
    interpreters = {k: _interpreter(p, threads) for k, p in files.items()}
    rows = {}
    for label, interpreter in interpreters.items():
        outputs = np.concatenate([_run(interpreter, x) for x in images])
        cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(outputs, reference)]
        rows[label] = {"cosine_to_pytorch_mean": round(statistics.mean(cosines), 5), "bytes": files[label].stat().st_size}
    times: dict[str, list[float]] = {k: [] for k in interpreters}
    for _ in range(rounds):  # interleaved: every file sees the same machine state
        for label, interpreter in interpreters.items():
            for _ in range(3):
                _run(interpreter, images[0])
            started = time.perf_counter()
            for _ in range(runs):
                _run(interpreter, images[0])
            times[label].append((time.perf_counter() - started) / runs * 1e3)
    for label, ms in times.items():
        rows[label]["p50_ms_of_round_means"] = round(statistics.median(ms), 3)
        rows[label]["ratio_to_onnx2tf_int8"] = None
    base = rows["onnx2tf full-int8 (its defaults)"]["p50_ms_of_round_means"]
    for row in rows.values():
        row["ratio_to_onnx2tf_int8"] = round(row["p50_ms_of_round_means"] / base, 3)
    return rows


def _scheme(summary: dict) -> str:
    number = summary["chosen"]["trial"]
    if number is None:
        return "the profile as it is: no trial beat its int8 on size and latency"
    return str(next(r["params"] for r in summary["trials"] if r["number"] == number))


def _markdown(result: dict) -> str:
    host = result["host"]
    lines = ["# edgekit search on MobileNetV2 (host profile): best int8 TFLite vs the default and onnx2tf's own", "",
             f"CPU: {host['cpu']}, int8 ISA {host['int8_isa']}; LiteRT + XNNPACK, {result['threads']} threads; "
             f"{result['rounds']} interleaved rounds of {result['runs_per_round']} runs; load average before timing "
             f"{result['load_average_before']}.", "",
             f"Search: {result['search']['trials']} trials, `--min-cosine {result['search']['min_cosine']}` (the default "
             f"int8's cosine on the search half, 4 of the 8 verification photos); chosen: trial {result['search']['chosen_trial']} "
             f"({result['search']['chosen_scheme']}). Races (host, interleaved, 200 runs each): "
             + "; ".join(f"trial {r['trial']} {r['trial_ms']:.3f} ms vs default {r['default_ms']:.3f} ms"
                         for r in result["search"]["races"])
             + ".", "",
             "| file | p50 ms | vs onnx2tf int8 | cosine to PyTorch (8 photos) | bytes |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['p50_ms_of_round_means']} | {r['ratio_to_onnx2tf_int8']}x | {r['cosine_to_pytorch_mean']} | "
              f"{r['bytes']:,} |" for k, r in result["rows"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    from edgekit.verify import hostinfo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="Keep the builds here [default: a temporary folder].")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "search_mobilenet.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit_searchnet_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        from edgekit.budget import Metric
        from edgekit.search.result import default_int8

        images, target = photos(), loose_host(work)
        default = default_build(work, target)
        own = onnx2tf_own(work, images["calibration"])
        tflite = {**default, "artifacts": [a for a in default["artifacts"] if a["file"] == "model_int8.tflite"]}
        min_cosine = round(default_int8(tflite, Metric.COSINE)["quality"], 5)
        summary = run_search(work, target, min_cosine, args.trials, args.workers)
        chosen, (fastest, fastest_path) = chosen_file(summary), fastest_tflite_trial(summary, work)
        files = {"fp32 (edgekit)": work / "default" / "model_fp32.tflite", "default int8 (edgekit)": work / "default" / "model_int8.tflite",
                 "onnx2tf full-int8 (its defaults)": own}
        if chosen is not None:
            files["search's choice (edgekit)"] = chosen
        if fastest_path is not None:
            files[f"fastest TFLite trial #{fastest['number']} (edgekit)"] = fastest_path
        load = os.getloadavg()[0]
        rows = measure(files, images["verification"], args.rounds, args.runs, args.threads)
        result = {"model": "MobileNetV2-1.0 224 (random weights, BN calibrated on photos)", "threads": args.threads,
                  "rounds": args.rounds, "runs_per_round": args.runs, "load_average_before": round(load, 2),
                  "host": hostinfo.describe(), "rows": rows,
                  "search": {"trials": len(summary["trials"]), "min_cosine": min_cosine,
                             "chosen_trial": summary["chosen"] and summary["chosen"]["trial"],
                             "chosen_scheme": summary["chosen"] and _scheme(summary), "races": summary["races"],
                             "chosen_identical_to_its_trial": summary["chosen"] and summary["chosen"]["identical_to_searched"],
                             "fastest_trial": fastest and fastest["number"], "fastest_scheme": fastest and fastest["params"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
