"""MiniLM teacher (6 layers) vs its distilled 3-layer student, both built for rpi4: host latency
of the same runtime and precision, timed side by side (interleaved rounds, one process), and the
student's held-out embedding cosine to the teacher's fp32 PyTorch embeddings.

    .venv/bin/python benchmarks/student_benchmark.py [--teacher DIR --student DIR]

Without bundle folders both are built first (the student's distillation: about 25 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edgekit import BuildOptions, build
from edgekit.budget import MaxDrop, Metric
from edgekit.tensors import TensorSpec
from edgekit.verify.hostrun import ORTSession, TFLiteSession

RECIPE = ("distill=epochs=2,student=depth,container=encoder.encoder.layer,keep_blocks=0+2+4,"
          "output_loss=cosine,lr=0.001,batch_size=32,dropout=false,lr_decay=true")
ARTIFACTS = ("model_fp32.onnx", "model_int8_dynamic.onnx", "model_fp32.tflite", "model_int8_dynamic.tflite")


def _specs(manifest: dict, key: str) -> list[TensorSpec]:
    return [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t.get("layout")) for t in manifest[key]]


def _session(bundle: Path, file: str, threads: int = 2):
    manifest = json.loads((bundle / "manifest.json").read_text())
    cls = TFLiteSession if file.endswith(".tflite") else ORTSession
    return cls(bundle / file, _specs(manifest, "inputs"), _specs(manifest, "outputs"), threads)


def latency(teacher: Path, student: Path, runs: int = 40, rounds: int = 5) -> dict:
    with np.load(teacher / "golden.npz", allow_pickle=False) as golden:
        sample = {"input_ids": golden["input_ids"][0], "attention_mask": golden["attention_mask"][0]}
    out = {}
    for file in ARTIFACTS:
        sessions = {"teacher": _session(teacher, file), "student": _session(student, file)}
        times = {k: [] for k in sessions}
        for r in range(rounds):
            for k, s in sessions.items():
                times[k] += s.latency_ms(sample, runs // rounds, warmup=3 if r == 0 else 1)
        p50 = {k: float(np.median(v)) for k, v in times.items()}
        out[file] = {**p50, "ratio": p50["student"] / p50["teacher"]}
    return out


def heldout_cosine(student: Path) -> dict:
    import torch

    from edgekit.examples import minilm
    from edgekit.text import load_sentences
    from edgekit.verify.metrics import per_sample_cosine

    tokens = minilm.tokenize_text(load_sentences("heldout"))
    teacher, _ = minilm.factory()
    with torch.no_grad():
        reference = teacher(torch.from_numpy(tokens["input_ids"][:, 0]), torch.from_numpy(tokens["attention_mask"][:, 0])).numpy()
    cos = per_sample_cosine(reference, _session(student, "model_fp32.onnx").run_batch(tokens)["embedding"])
    return {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(cos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path)
    parser.add_argument("--student", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = args.teacher or Path(build(BuildOptions(target="rpi4", model="example:minilm", out=Path(tmp) / "t",
                                                          latency_runs=0))["bundle_dir"])
        student = args.student or Path(build(BuildOptions(target="rpi4", model="example:minilm", out=Path(tmp) / "s",
                                                          recipe=(RECIPE,), latency_runs=0,
                                                          # 0.937 cosine: below rpi4's budget (0.98), accepted
                                                          max_drop=MaxDrop(Metric.COSINE, 0.9)))["bundle_dir"])
        result = {"latency_ms": latency(teacher, student), "student_heldout_cosine_to_teacher": heldout_cosine(student)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "student_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| artifact | teacher p50 ms | student p50 ms | student / teacher |", "|---|---|---|---|"]
    lines += [f"| {f} | {r['teacher']:.2f} | {r['student']:.2f} | {r['ratio']:.2f}x |" for f, r in result["latency_ms"].items()]
    cos = result["student_heldout_cosine_to_teacher"]
    lines.append(f"\nStudent embeddings vs teacher (fp32 PyTorch), {cos['sentences']} held-out sentences: "
                 f"mean cosine {cos['mean']:.4f}, min {cos['min']:.4f} (issue #5 asks >= 0.93: "
                 f"{'met' if cos['mean'] >= 0.93 else 'not met'}).")
    text = "# MiniLM 3-layer student vs 6-layer teacher (rpi4 bundles, host, 2 threads)\n\n" + "\n".join(lines) + "\n"
    (args.out / "student_benchmark.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
