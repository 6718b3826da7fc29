"""One trial: one ordinary build with the trial's profile overlay, measured.

Runs in a worker process (the pool's ``spawn`` children import this module only), so it takes
and returns plain data. A failing build is a result too: its error is returned, never raised,
so the search records it and goes on.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from edgekit.search.space import to_toml


def _artifact(manifest: dict) -> dict:
    """The trial's artifact: the one quantized file its overlay asked for (``.ort`` over the
    ``.onnx`` it was converted from, since the device loads that one)."""
    artifacts = sorted(manifest["artifacts"], key=lambda a: (a["format"] != "ort", a["file"]))
    return artifacts[0]


def measure(manifest: dict) -> dict[str, Any]:
    """The objectives of a built bundle: top-1 (on the split it was evaluated on), the reference
    model's top-1 there, the drop in percentage points, bytes and host p50 latency."""
    artifact = _artifact(manifest)
    accuracy = manifest.get("accuracy") or {}
    quality = accuracy.get("per_artifact", {}).get(artifact["file"])
    if quality is None:
        raise ValueError("the build measured no top-1 (the search needs a labelled eval split)")
    latency = (artifact.get("host_latency_ms") or {}).get("p50")
    return {"artifact": artifact["file"], "quality": quality, "reference": accuracy["reference"],
            "drop_pp": (accuracy["reference"] - quality) * 100, "bytes": artifact["bytes"],
            "latency_ms": latency, "dataset": accuracy["dataset"], "sha256": artifact["sha256"]}


def build_with(job: dict[str, Any], overlay_file: Path | None, out: Path, split: str) -> dict:
    """Build ``job``'s model for its target with ``overlay_file`` into ``out``; its manifest."""
    from edgekit.options import BuildOptions, QualitySplit
    from edgekit.pipeline import build

    options = BuildOptions(target=job["target"], model=job["model"], out=out, force=True, seed=job["seed"],
                           latency_runs=job["latency_runs"], verify_on="none", overlay=overlay_file,
                           quality_split=QualitySplit(split))
    return build(options)


def run_trial(job: dict[str, Any], number: int, overlay: dict[str, Any]) -> dict[str, Any]:
    """Build trial ``number`` under ``job["out"]/trials/NNNN`` and return its figures, or
    ``{"error": ...}`` when the build failed."""
    folder = Path(job["out"]) / "trials" / f"{number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    overlay_file = folder / "overlay.toml"
    overlay_file.write_text(to_toml(overlay, f"edgekit search: trial {number}"), encoding="utf-8")
    try:
        return measure(build_with(job, overlay_file, folder / "bundle", "search"))
    except Exception as exc:  # any failure is this trial's result, not the search's end
        (folder / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
