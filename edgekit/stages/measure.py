"""Host latency stage: median of repeated runs per artifact, same runtime settings for all.

Artifacts are timed in interleaved rounds (a slice of runs for each, then the next round), so
a load spike on the host hits all of them alike and the ratios between them stay fair.
These are build-host figures: they rank artifacts, they do not predict device latency; the
device runner measures that.
"""
from __future__ import annotations

import numpy as np

from edgekit.context import BuildContext
from edgekit.stages.base import Stage
from edgekit.verify.hostrun import open_session

ROUNDS = 5


def interleaved_latency(sessions: list, sample: dict[str, np.ndarray], runs: int, rounds: int = ROUNDS) -> list[list[float]]:
    """Per session, ``runs`` timed runs (ms) on ``sample`` in ``rounds`` interleaved slices: the
    one timing rule for artifacts compared with each other (a build's, a search's final race)."""
    per_round = max(1, -(-runs // rounds))
    times: list[list[float]] = [[] for _ in sessions]
    for round_index in range(rounds):
        for session, bucket in zip(sessions, times):
            bucket += session.latency_ms(sample, per_round, warmup=5 if round_index == 0 else 1)
    return times


class MeasureLatency(Stage):
    """Fill ``host_latency_ms`` (p50, mean, min, runs, threads) for every artifact."""

    name = "measure"
    description = "timing artifacts on this host"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.latency_runs > 0

    def run(self, ctx: BuildContext) -> None:
        sample = {k: v[0] for k, v in ctx.calibration.verification.items()}
        sessions, threads = [], []
        for artifact in ctx.artifacts:
            cfg = ctx.profile.tflite if artifact.format == "tflite" else ctx.profile.ort
            threads.append(ctx.host_threads(cfg.threads))
            sessions.append(open_session(ctx.bundle_dir / artifact.file, artifact.format, ctx.inputs, ctx.outputs, threads[-1]))
        times = interleaved_latency(sessions, sample, ctx.options.latency_runs)
        for artifact, bucket, count in zip(ctx.artifacts, times, threads):
            t = np.asarray(bucket)
            artifact.host_latency_ms = {"p50": float(np.median(t)), "mean": float(t.mean()), "min": float(t.min()),
                                        "runs": len(t), "threads": count}
