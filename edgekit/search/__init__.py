"""``edgekit search``: the best artifact for a target within an accuracy budget, found by Optuna.

Each trial is one ordinary build (``edgekit.pipeline.build``) with a profile overlay drawn from
the space the profile allows (:mod:`edgekit.search.space`); the study lives in SQLite under
``--out`` (:mod:`edgekit.search.study`); the result is ``chosen.toml``, its bundle and a report
(:mod:`edgekit.search.result`, :mod:`edgekit.search.html`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from edgekit.search.devices import Devices
from edgekit.search.executors import TrialPool
from edgekit.search.options import SearchOptions, parse_budget, parse_search_budget

__all__ = ["Devices", "SearchOptions", "parse_budget", "parse_search_budget", "search"]


def _default_search(options: SearchOptions) -> dict:
    """The unchanged profile's best int8, on the search half, timed where the trials are, and
    its per-layer sensitivity (built once, kept for ``--resume``)."""
    from edgekit.search.result import default_build, default_int8
    from edgekit.search.trial import time_on_device
    from edgekit.tensors import takes_tokens

    cached = options.out / "default_search.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    manifest = default_build(options, "search", sensitivity=True)
    figures = default_int8(manifest, options.max_drop.metric)
    if options.devices is not None:
        figures = time_on_device(options.devices, options.out / "default", figures, options.out)
    figures["sensitivity"] = manifest.get("sensitivity")
    figures["token_inputs"] = takes_tokens(spec["dtype"] for spec in manifest["inputs"])
    figures["trainable"] = bool(manifest.get("trainable"))
    cached.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


def _sensitive_layers(default: dict) -> list[str]:
    return [row["node"] for row in ((default.get("sensitivity") or {}).get("layers") or [])]


def _progress_line(study: Any, started: float, options: SearchOptions) -> str:
    from edgekit.search.report import quality_text
    from edgekit.search.result import trial_rows

    finished = [r for r in trial_rows(study) if r["state"] in ("COMPLETE", "FAIL")]
    rows = [r for r in finished if r["duplicate_of"] is None]  # a repeated proposal is not a trial built
    failed = sum(r["state"] == "FAIL" for r in rows)
    feasible = [r for r in finished if r["state"] == "COMPLETE" and r["feasible"]]
    best = min(feasible, key=lambda r: (r["bytes"], r["latency_ms"]), default=None)
    elapsed = time.monotonic() - started
    left = (options.trials - len(rows)) * elapsed / max(1, len(rows))
    if options.budget_s is not None:
        left = min(left, max(0.0, options.budget_s - elapsed))
    text = "none feasible yet" if best is None else (f"smallest feasible #{best['number']}: {best['bytes'] / 1e3:.1f} KB, "
                                                     f"{best['latency_ms']:.3f} ms, {quality_text(best)}")
    return f"[search] {len(rows)}/{options.trials} trials done ({failed} failed); {text}; ~{left:.0f}s left"


def search(options: SearchOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or ``resume``) the search in ``options.out``; build and verify the chosen artifact,
    write ``chosen.toml``, ``report.html`` and the plots; return the summary (also ``summary.json``)."""
    from edgekit.search import study as studies
    from edgekit.search.executors import open_pool
    from edgekit.search.trial import trial_threads
    from edgekit.targets import load_target

    profile = load_target(options.target)
    study = studies.open_study(options)
    say = progress or (lambda line: None)
    pool = open_pool(options.ray, options.workers, trial_threads(options.workers))
    try:
        options = _with_ray_devices(options, pool, profile.name, say)
        default = _default_search(options)
        studies.run_study(study, options, profile, pool, lambda s, started: say(_progress_line(s, started, options)),
                          _sensitive_layers(default), default.get("token_inputs", False), default.get("trainable", False))
    finally:
        pool.close()
    return _finish(options, profile.name, study, default, pool.where, say)


def _with_ray_devices(options: SearchOptions, pool: TrialPool, resource: str, say: Callable[[str], None]) -> SearchOptions:
    """On a Ray cluster with nodes advertising the profile's name as a resource, and no
    ``--host``: those nodes are the devices trials are timed on."""
    import dataclasses

    from edgekit.device.settings import RunnerSettings

    if options.devices is not None or not pool.has_resource(resource):
        return options
    say(f"[search] timing every trial on the Ray nodes with resource {resource!r}")
    devices = Devices(ray_resource=resource, settings=RunnerSettings(runs=options.latency_runs))
    return dataclasses.replace(options, devices=devices)


def _finish(options: SearchOptions, target: str, study: Any, default: dict, ran_on: str, say: Callable[[str], None]) -> dict:
    from edgekit.search import html, result

    rows = result.trial_rows(study)
    summary: dict[str, Any] = {"target": target, "model": options.model or "example:digits", "max_drop": str(options.max_drop),
                               "metric": options.max_drop.metric.value, "ran_on": ran_on, "trials": rows,
                               "default": {"search": default}}
    summary["default"]["heldout"] = result.default_int8(result.default_build(options, "heldout"), options.max_drop.metric)
    say("[search] timing the best candidates beside the default build's int8")
    chosen_row, summary["races"] = result.choose(options, rows, default)
    what = f"trial #{chosen_row['number']}" if chosen_row else "default profile (no trial beat it on size and latency)"
    say(f"[search] building the chosen {what} (held-out accuracy)")
    summary["chosen"] = result.finish(options, chosen_row, default)
    summary["notes"] = result.resolution_notes(options.max_drop, summary["chosen"]["heldout"])
    html.write(summary, options.out)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary
