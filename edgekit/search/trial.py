"""One trial: one ordinary build with the trial's profile overlay, measured.

Runs in a worker process (the pool's ``spawn`` children import this module only), so it takes
and returns plain data. A failing build is a result too: its error is returned, never raised,
so the search records it and goes on.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.budget import Metric, against_original, artifact_figure
from edgekit.search.space import to_toml
from edgekit.verify.hostinfo import int8_isa


def shipped(artifacts: list[dict]) -> list[dict]:
    """The artifacts a device loads: an ``.onnx`` converted to ``.ort`` counts as its ``.ort``."""
    converted = {a.get("reference_via") for a in artifacts}
    return [a for a in artifacts if a["file"] not in converted]


def _artifact(manifest: dict) -> dict:
    """The trial's artifact: the one quantized file its overlay asked for, as the device loads it."""
    return sorted(shipped(manifest["artifacts"]), key=lambda a: (a["format"] != "ort", a["file"]))[0]


def measure(manifest: dict, metric: Metric = Metric.TOP1_DROP) -> dict[str, Any]:
    """The objectives of a built bundle: its quality by ``metric`` (top-1, mean cosine or
    perplexity on the split it was evaluated on), the reference's, the budget ``figure`` (top-1
    drop in pp, the cosine, the perplexity increase in %), bytes and host p50 latency."""
    artifact = _artifact(manifest)
    accuracy = manifest.get("accuracy") or {}
    if artifact["file"] not in accuracy.get("per_artifact", {}):
        raise ValueError("the build measured no task quality (the search needs the model's eval split)")
    quality, figure = artifact_figure(metric, accuracy, artifact["file"])
    timed = artifact.get("host_latency_ms") or {}
    latency = timed.get("p50")
    return {"artifact": artifact["file"], "metric": metric.value, "quality": quality, "reference": against_original(accuracy)["reference"],
            "figure": figure, "bytes": artifact["bytes"], "latency_ms": latency, "host_latency_ms": latency,
            "latency_where": f"build host ({int8_isa()}, {timed.get('threads', 1)} threads)",
            "dataset": accuracy["dataset"], "samples": accuracy.get("samples"),
            "sha256": artifact["sha256"]}


def trial_threads(workers: int) -> int:
    """CPU threads of one trial when ``workers`` trials build at once on this host: its share of
    the cores. Two trials that each start a thread per core fight over them (torch's, TF's and
    ORT's pools spin while they wait), so two workers did only 1.2-1.3x the trials of one."""
    return max(1, (os.cpu_count() or 1) // workers)


def trial_job(options: Any) -> dict[str, Any]:
    """What every trial build of a search (``SearchOptions``) shares, as plain data for workers;
    ``threads``: each build's share of the cores (the default and chosen builds use it too, so
    every latency of the search is timed with the same count)."""
    return {"target": options.target, "model": options.model, "out": str(options.out), "seed": options.seed,
            "latency_runs": options.latency_runs, "metric": options.max_drop.metric.value, "devices": options.devices,
            "trial_time_s": options.trial_time_s, "budget": str(options.max_drop), "threads": trial_threads(options.workers)}


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps the thread pools a trial's process starts and edgekit gives no count
    to: OpenMP's, OpenBLAS's (numpy) and TensorFlow's (onnx2tf, the TFLite converter) read it at
    start-up; torch's and the host sessions' come from ``BuildOptions.threads``."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
    return {**{name: str(threads) for name in names}, "TF_NUM_INTEROP_THREADS": "1"}


def limit_threads(threads: int) -> None:
    """A pool worker's initializer: :func:`thread_env` before the trial imports anything heavy."""
    os.environ.update(thread_env(threads))


def build_with(job: dict[str, Any], overlay_file: Path | None, out: Path, split: str, sensitivity: bool = False,
               record_only: bool = False) -> dict:
    """Build ``job``'s model for its target with ``overlay_file`` into ``out`` (with the per-layer
    sensitivity when asked); its manifest. The file is given as ``--recipe`` would give it: its
    profile tables overlay the profile, its ``[[compress]]`` steps compress the model.
    ``record_only``: a broken budget or verdict is recorded, not a stop (``--allow-drift``):
    the held-out builds report what the search chose, they do not choose again."""
    from edgekit.budget import MaxDrop
    from edgekit.options import BuildOptions, QualitySplit
    from edgekit.pipeline import build
    from edgekit.recipefile import has_steps

    # compression is judged by the search's budget (not the profile's), before any conversion
    compresses = overlay_file is not None and has_steps(overlay_file)
    options = BuildOptions(target=job["target"], model=job["model"], out=out, force=True, seed=job["seed"], allow_drift=record_only,
                           latency_runs=job["latency_runs"], verify_on="none", recipe_file=overlay_file,
                           quality_split=QualitySplit(split), sensitivity=sensitivity,
                           max_drop=MaxDrop.parse(job["budget"]) if compresses and "budget" in job else None,
                           threads=job.get("threads"))
    return build(options)


class TrialTimeout(BaseException):
    """A trial's build ran past ``--trial-time``. A BaseException, like KeyboardInterrupt: the
    stages' own ``except Exception`` (a converter's failure becomes a ConversionError) must not
    turn it into another error, and their ``finally`` blocks still clean up."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread after ``seconds``. An alarm signal, so it
    stops the build between two Python bytecodes (a long training loop included) and the
    worker goes on with the next trial; only the main thread of a process gets signals (pool
    workers and Ray tasks run trials there; elsewhere no limit applies)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TrialTimeout(f"the trial ran past --trial-time {seconds:g}s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_trial(job: dict[str, Any], number: int, overlay: dict[str, Any]) -> dict[str, Any]:
    """Build trial ``number`` under ``job["out"]/trials/NNNN`` and return its figures (timed on
    a device of ``job["devices"]`` when there are any), or ``{"error": ...}`` when it failed."""
    folder = Path(job["out"]) / "trials" / f"{number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    overlay_file = folder / "overlay.toml"
    recorded = {**overlay, "build": {"threads": job["threads"]}} if job.get("threads") else overlay  # rebuilt with the same count
    overlay_file.write_text(to_toml(recorded, f"edgekit search: trial {number}"), encoding="utf-8")
    try:
        with time_limit(job.get("trial_time_s")):
            manifest = build_with(job, overlay_file, folder / "bundle", "search")
        figures = measure(manifest, Metric(job["metric"]))
        if job.get("devices") is not None:
            figures = time_on_device(job["devices"], folder / "bundle", figures, Path(job["out"]))
        return figures
    except (Exception, TrialTimeout) as exc:  # any failure is this trial's result, not the search's end
        (folder / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def time_on_device(devices: Any, bundle: Path, figures: dict[str, Any], out: Path) -> dict[str, Any]:
    """``figures`` with the p50 of a free device of ``devices`` as the latency objective (the
    host's kept beside it)."""
    from edgekit.search.devices import device_latency

    device = device_latency(devices, bundle, figures["artifact"], out)
    return {**figures, **device, "latency_ms": device["device_latency_ms"], "latency_where": f"device {device['device']}"}
