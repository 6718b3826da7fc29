"""Bundle stage: golden data, manifest, device runner and README beside the artifacts.

The layout and every manifest field are specified in docs/bundle-format.md.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np

import edgekit
from edgekit.context import BuildContext
from edgekit.plots import size_vs_accuracy
from edgekit.runner import RUNNER_PATH
from edgekit.runner.edgekit_runner import sha256_file
from edgekit.stages.base import Stage
from edgekit.verify import hostinfo


def manifest(ctx: BuildContext) -> dict:
    """The manifest as a JSON-ready dict."""
    profile = ctx.profile
    return {
        "schema": 1,
        "edgekit_version": edgekit.__version__,
        "target": profile.name,
        "target_description": profile.description,
        "device": asdict(profile.device),
        "model": ctx.model_label,
        "task": ctx.task,
        "inputs": [s.to_json() for s in ctx.inputs],
        "outputs": [s.to_json() for s in ctx.outputs],
        "calibration": {"set": ctx.calibration.name, "provenance": ctx.calibration.provenance},
        "golden": {"file": "golden.npz", "samples": len(next(iter(ctx.reference.values()))),
                   "sha256": sha256_file(ctx.bundle_dir / "golden.npz")},
        "runtime_defaults": {"tflite": {"delegate": profile.tflite.delegate, "threads": profile.tflite.threads},
                             "ort": {"provider": profile.ort.provider, "threads": profile.ort.threads}},
        "artifacts": [asdict(a) for a in ctx.artifacts],
        "extra_files": sorted(ctx.extra_files),
        "accuracy": ctx.accuracy or None,
        "compression": ctx.compression or None,
        "trainable": ctx.trainable,  # compression with fine-tuning is worth trying (edgekit search reads it)
        **({"sensitivity": ctx.sensitivity} if ctx.sensitivity else {}),  # absent unless asked: manifests stay as they were
        # int8 figures depend on the CPU that ran them (see edgekit.verify.hostinfo): say which one did
        "verified_on": hostinfo.describe(),
    }


_README = """# edgekit bundle: {model} for {target}

{description}

Files: {files}.

## Run it on the device

Copy this folder to the device, install numpy and one runtime, and run the runner:

    pip install numpy ai-edge-litert      # or: tflite-runtime "numpy<2" ; or: onnxruntime
    python edgekit_runner.py .            # every artifact, latency + memory + correctness
    python edgekit_runner.py . --artifact {first} --threads {threads} --json result.json

The runner checks each file's sha256 against manifest.json first, then compares the outputs on
golden.npz with the reference outputs recorded at build time (tolerances in manifest.json).
"""


class WriteBundle(Stage):
    """Write golden.npz, manifest.json, the runner and README.md into the bundle folder."""

    name = "bundle"
    description = "writing the bundle"

    def run(self, ctx: BuildContext) -> None:
        out = ctx.bundle_dir
        golden = {**{k: v for k, v in ctx.calibration.verification.items()}, **ctx.reference}
        np.savez(out / "golden.npz", **golden)
        if RUNNER_PATH.is_file():
            shutil.copyfile(RUNNER_PATH, out / RUNNER_PATH.name)
        for artifact in ctx.artifacts:
            artifact.bytes = (out / artifact.file).stat().st_size
            artifact.sha256 = sha256_file(out / artifact.file)
        data = manifest(ctx)
        (out / "reports").mkdir(exist_ok=True)
        if size_vs_accuracy(data, out / "reports" / "size_vs_accuracy.png"):
            data["plots"] = ["reports/size_vs_accuracy.png"]
        (out / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
        files = ", ".join(f"`{a.file}`" for a in ctx.artifacts)
        (out / "README.md").write_text(_README.format(model=ctx.model_label, target=ctx.profile.name, files=files,
                                                      description=ctx.profile.description, threads=ctx.profile.tflite.threads,
                                                      first=ctx.artifacts[0].file if ctx.artifacts else "FILE"))
