"""Compression benchmark: the recipes of issue #4 on the bundled digits example (rpi4 profile),
plus low-rank on a wide MLP and half-depth distillation, all measured in one run.

Each recipe is a real `edgekit build` (accuracy of every artifact on the 360-image test split).
The int8 TFLite artifacts of all builds are then timed *side by side* in interleaved rounds
(same runtime, same threads) so the latency ratios are fair on a shared machine.

    .venv/bin/python benchmarks/compression_benchmark.py [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit import BuildOptions, build
from edgekit.tensors import TensorSpec
from edgekit.verify.hostrun import TFLiteSession

RECIPES = {
    "baseline (PTQ)": (),
    "structured 50% + fine-tune": ("prune=structured:0.5,finetune_epochs=10",),
    "unstructured 80% + fine-tune": ("prune=unstructured:0.8,steps=3,finetune_epochs=3",),
    "QAT": ("qat=epochs=2",),
}


def run_builds(tmp: Path) -> dict[str, dict]:
    manifests = {}
    for index, (label, recipe) in enumerate(RECIPES.items()):
        start = time.perf_counter()
        manifests[label] = build(BuildOptions(target="rpi4", out=tmp / str(index), recipe=recipe, latency_runs=0, allow_drift=True))
        manifests[label]["build_s"] = time.perf_counter() - start
        print(f"{label}: built in {manifests[label]['build_s']:.0f} s", file=sys.stderr)
    return manifests


def time_side_by_side(manifests: dict[str, dict], runs: int = 400, rounds: int = 8, threads: int = 2) -> dict[str, float]:
    """Median int8 TFLite latency per build, timed in interleaved rounds."""
    sessions = {}
    for label, m in manifests.items():
        inputs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"], i.get("layout")) for i in m["inputs"]]
        outputs = [TensorSpec(o["name"], tuple(o["shape"]), o["dtype"]) for o in m["outputs"]]
        sessions[label] = TFLiteSession(Path(m["bundle_dir"]) / "model_int8.tflite", inputs, outputs, threads)
    sample = {"input": np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for r in range(rounds):
        for label, session in sessions.items():
            times[label] += session.latency_ms(sample, runs // rounds, warmup=20 if r == 0 else 2)
    return {label: float(np.median(t)) for label, t in times.items()}


def recipe_rows(manifests: dict[str, dict], latency: dict[str, float]) -> list[dict]:
    base = manifests["baseline (PTQ)"]
    base_fp32 = base["accuracy"]["reference"]
    rows = []
    for label, m in manifests.items():
        acc = m["accuracy"]["per_artifact"]
        steps = m.get("compression") or []
        last = steps[-1] if steps else {}
        rows.append({"recipe": label, "params": last.get("params"), "sparsity": last.get("sparsity"),
                     "fp32_acc": m["accuracy"]["reference"], "fp32_acc_drop_pts": 100 * (base_fp32 - m["accuracy"]["reference"]),
                     "int8_tflite_acc": acc["model_int8.tflite"], "int8_onnx_acc": acc["model_int8.onnx"],
                     "int8_qat_onnx_acc": acc.get("model_int8_qat.onnx"),
                     "int8_tflite_bytes": next(a["bytes"] for a in m["artifacts"] if a["file"] == "model_int8.tflite"),
                     "int8_tflite_p50_ms": latency[label], "latency_vs_baseline": latency[label] / latency["baseline (PTQ)"],
                     "build_s": m["build_s"]})
    return rows


def digits_tensors():
    from edgekit.calibration import load_named

    spec = [TensorSpec("input", (1, 1, 8, 8), "float32", "NCHW")]
    cal = load_named("digits", spec)
    x = lambda a: torch.from_numpy(a["input"][:, 0].copy())  # noqa: E731
    return x(cal.train_samples()), torch.from_numpy(cal.train_labels), x(cal.eval), torch.from_numpy(cal.eval_labels)


def fit(model: nn.Module, x, y, epochs: int, weight_decay: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            batch = order[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return model.eval()


def lowrank_row(data) -> dict:
    """Low-rank at energy 0.9 on a wide MLP, then a short distillation back to the original."""
    from edgekit.compress import Recipe, TrainData, run

    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    # weight decay concentrates the spectrum (measured: without it energy 0.9 keeps most ranks)
    mlp = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512),
                            nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)), xtr, ytr, 30, weight_decay=1.0)
    recipe = Recipe.from_cli(["lowrank=energy:0.9", "distill=epochs=10,lr=1e-3,output_loss=mse,alpha=1.0"])
    _, reports = run(recipe, mlp, TrainData(xtr, ytr, xte, yte))
    low = reports[1].details
    return {"linear_params_removed_fraction": low["removed_fraction"], "params": [r.params for r in reports],
            "accuracy": [r.accuracy for r in reports], "cosine_after_lowrank": reports[1].cosine,
            "cosine_after_distill": reports[2].cosine}


def depth_row(data) -> dict:
    """A 6-block teacher, its alternate-block student, distilled on the example's data."""
    from edgekit.compress import DistillOptions, TrainData, count_params, derive_student_by_depth, evaluate_top1
    from edgekit.compress.distill import apply as distill

    xtr, ytr, xte, yte = data
    block = lambda: nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())  # noqa: E731
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
                            nn.Sequential(*[block() for _ in range(6)]),
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)))
    teacher = fit(teacher, xtr, ytr, 15)
    student = derive_student_by_depth(teacher, "alternate", example_inputs=(xte[:1],))
    before = evaluate_top1(student, xte, yte)
    out, _ = distill(student, DistillOptions(epochs=10, lr=1e-3), TrainData(xtr, ytr, xte, yte), teacher=teacher)
    t, s = evaluate_top1(teacher, xte, yte), evaluate_top1(out, xte, yte)
    return {"teacher_acc": t, "untrained_student_acc": before, "distilled_acc": s, "gap_recovered": (s - before) / (t - before),
            "params": [count_params(teacher), count_params(out)]}


def markdown(rows: list[dict], lowrank: dict, depth: dict) -> str:
    text = ("| recipe | params | sparsity | fp32 acc | drop vs baseline | int8 TFLite acc | int8 ORT acc | QAT ORT acc "
            "| int8 TFLite | p50 | vs baseline |\n")
    text += "|---|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        qat = f"{r['int8_qat_onnx_acc'] * 100:.2f}%" if r["int8_qat_onnx_acc"] is not None else "-"
        sparsity = f"{r['sparsity']:.3f}" if r["sparsity"] is not None else "-"
        text += (f"| {r['recipe']} | {r['params'] or '-'} | {sparsity} "
                 f"| {r['fp32_acc'] * 100:.2f}% | {r['fp32_acc_drop_pts']:.2f} pt | {r['int8_tflite_acc'] * 100:.2f}% "
                 f"| {r['int8_onnx_acc'] * 100:.2f}% | {qat} | {r['int8_tflite_bytes'] / 1e3:.1f} KB "
                 f"| {r['int8_tflite_p50_ms'] * 1e3:.1f} us | {r['latency_vs_baseline']:.2f}x |\n")
    text += (f"\nLow-rank (energy 0.9) on a 64-256-512-512-256-10 MLP: {lowrank['linear_params_removed_fraction'] * 100:.1f}% of "
             f"Linear params removed; output cosine {lowrank['cosine_after_lowrank']:.4f} after SVD, "
             f"{lowrank['cosine_after_distill']:.4f} after distillation.\n")
    text += (f"\nHalf-depth distillation (6 -> 3 blocks): teacher {depth['teacher_acc'] * 100:.2f}%, untrained student "
             f"{depth['untrained_student_acc'] * 100:.2f}%, distilled {depth['distilled_acc'] * 100:.2f}% "
             f"({depth['gap_recovered'] * 100:.1f}% of the gap recovered), params {depth['params'][0]} -> {depth['params'][1]}.\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny-batch training is fastest (and least noisy) on one thread
    with tempfile.TemporaryDirectory() as tmp:
        manifests = run_builds(Path(tmp))
        rows = recipe_rows(manifests, time_side_by_side(manifests))
    data = digits_tensors()
    lowrank, depth = lowrank_row(data), depth_row(data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compression_benchmark.json").write_text(json.dumps({"recipes": rows, "lowrank": lowrank, "depth": depth}, indent=2) + "\n")
    table = markdown(rows, lowrank, depth)
    (args.out / "compression_benchmark.md").write_text("# Compression benchmark (digits example, rpi4 profile, host timings)\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
