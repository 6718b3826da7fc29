"""Host latency stage: median of repeated runs per artifact, same runtime settings for all.

These are build-host figures (x86 unless the build runs on the device): they rank artifacts,
they do not predict device latency. The device runner measures that.
"""
from __future__ import annotations

import os

import numpy as np

from edgekit.context import BuildContext
from edgekit.hostrun import open_session
from edgekit.stages.base import Stage


class MeasureLatency(Stage):
    """Fill ``host_latency_ms`` (p50, mean, min, runs, threads) for every artifact."""

    name = "measure"
    description = "timing artifacts on this host"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.latency_runs > 0

    def run(self, ctx: BuildContext) -> None:
        sample = {k: v[0] for k, v in ctx.calibration.verification.items()}
        for artifact in ctx.artifacts:
            cfg = ctx.profile.tflite if artifact.format == "tflite" else ctx.profile.ort
            # the profile's thread count, but never more than this host has
            threads = max(1, min(cfg.threads, os.cpu_count() or 1))
            session = open_session(ctx.bundle_dir / artifact.file, artifact.format, ctx.inputs, ctx.outputs, threads)
            times = np.asarray(session.latency_ms(sample, ctx.options.latency_runs))
            artifact.host_latency_ms = {"p50": float(np.median(times)), "mean": float(times.mean()),
                                        "min": float(times.min()), "runs": len(times), "threads": threads}
