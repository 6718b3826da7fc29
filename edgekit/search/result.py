"""What a search leaves the user: ``chosen.toml``, the chosen bundle, the default build beside it.

The chosen trial is the feasible Pareto-front trial with the smallest size plus latency, each
relative to the default build's best int8 artifact, that is no larger than it and, timed again
beside it, no slower (else the default itself is the choice: a search never ships worse than
the profile). Both the chosen recipe and the unchanged profile are then built again with their
accuracy measured on the held-out half of the eval split, which no trial was judged on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.budget import Metric, higher_is_better
from edgekit.errors import UnsupportedError
from edgekit.runner.edgekit_runner import load_manifest, sha256_file
from edgekit.search.options import SearchOptions
from edgekit.search.space import to_toml
from edgekit.search.trial import build_with, measure, shipped, trial_job
from edgekit.verify.hostinfo import int8_isa

#: the figures of a trial a row carries (besides number, state, params, feasible)
ROW_KEYS = ("metric", "quality", "figure", "bytes", "latency_ms", "latency_where", "host_latency_ms", "artifact", "ran_on",
            "duplicate_of", "error", "sha256")


def trial_rows(study: Any) -> list[dict]:
    """One plain row per trial (number, state, parameters, figures, error)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params),
                     "feasible": attrs.get("constraint", 1.0) <= 0, **{k: attrs.get(k) for k in ROW_KEYS}})
    return rows


def default_int8(manifest: dict, metric: Metric) -> dict:
    """The default build's best int8: of its int8 artifacts, the fastest on the host, an ORT
    model counted as its ``.ort`` (what the device loads, and what a trial is measured by)."""
    int8 = shipped([a for a in manifest["artifacts"] if a["precision"] in ("int8", "int8_dynamic")])
    if not int8:
        raise UnsupportedError(f"the {manifest['target']} profile builds no int8 artifact to compare with",
                               "search a profile that lists int8 for ORT or TFLite")
    best = min(int8, key=lambda a: (a.get("host_latency_ms") or {}).get("p50", float("inf")))
    try:
        return measure({**manifest, "artifacts": [best]}, metric)
    except ValueError as exc:
        raise UnsupportedError(f"cannot judge this model by the search's budget: {exc}",
                               "classifiers take --max-drop 0.5pp, embeddings --min-cosine 0.998, "
                               "language models --max-ppl-increase 5%") from None


def candidates(rows: list[dict], default: dict, metric: Metric) -> list[dict]:
    """The feasible Pareto-front trials no larger than the default build's best int8, best first
    (least bytes/default + latency/default)."""
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] and r["duplicate_of"] is None]
    sign = 1 if higher_is_better(metric) else -1
    front = [r for r in feasible if not any(_dominates(o, r, sign) for o in feasible)]
    smaller = [r for r in front if r["bytes"] <= default["bytes"]]
    return sorted(smaller, key=lambda r: (r["bytes"] / default["bytes"] + r["latency_ms"] / default["latency_ms"], r["number"]))


#: candidates raced against the default before the search settles for the default itself
MAX_RACES = 3
#: timed runs of each file in a race, in this many interleaved rounds
RACE_RUNS, RACE_ROUNDS = 200, 10


def choose(options: SearchOptions, rows: list[dict], default: dict) -> tuple[dict | None, list[dict]]:
    """The trial to ship, never larger nor slower than the default build's best int8, and the
    races run to decide it. Trial latencies come from different moments of a busy search (two
    workers share the cores), so on the host each candidate is timed again beside the default,
    interleaved in one process; with ``--host`` the device figures decide. None: no trial beat
    the default on both, which is then the choice."""
    races = []
    for row in candidates(rows, default, options.max_drop.metric)[:MAX_RACES]:
        if options.devices is not None:
            if row["latency_ms"] <= default["latency_ms"]:
                return row, races
            continue
        races.append(race(options, row, default))
        if races[-1]["trial_ms"] <= races[-1]["default_ms"]:
            return row, races
    return None, races


def race(options: SearchOptions, row: dict, default: dict) -> dict:
    """Host p50 (ms) of trial ``row``'s artifact and of the default's, timed side by side."""
    import numpy as np

    from edgekit.stages.measure import interleaved_latency

    trial = options.out / "trials" / f"{row['number']:04d}" / "bundle"
    base = options.out / "default"
    manifest = load_manifest(base)
    sessions = [_session(trial, load_manifest(trial), row["artifact"]), _session(base, manifest, default["artifact"])]
    with np.load(base / "golden.npz", allow_pickle=False) as golden:
        sample = {spec["name"]: golden[spec["name"]][0] for spec in manifest["inputs"]}
    times = interleaved_latency(sessions, sample, RACE_RUNS, RACE_ROUNDS)
    trial_ms, default_ms = (float(np.median(t)) for t in times)
    return {"trial": row["number"], "trial_ms": trial_ms, "default_ms": default_ms, "runs": RACE_RUNS,
            "where": f"build host ({int8_isa()}), interleaved"}


def _session(bundle: Path, manifest: dict, file: str) -> Any:
    """A host session of ``bundle``'s artifact ``file`` with the threads its build timed it with."""
    from edgekit.tensors import TensorSpec
    from edgekit.verify.hostrun import open_session

    artifact = next(a for a in manifest["artifacts"] if a["file"] == file)
    inputs, outputs = ([TensorSpec.from_json(s) for s in manifest[k]] for k in ("inputs", "outputs"))
    threads = (artifact.get("host_latency_ms") or {}).get("threads", 1)
    return open_session(bundle / file, artifact["format"], inputs, outputs, threads)


def _dominates(a: dict, b: dict, quality_sign: int) -> bool:
    keys = (("quality", quality_sign), ("bytes", -1), ("latency_ms", -1))
    no_worse = all(a[k] * s >= b[k] * s for k, s in keys)
    return no_worse and any(a[k] * s > b[k] * s for k, s in keys)


def default_build(options: SearchOptions, split: str, sensitivity: bool = False) -> dict:
    """The profile as it is, built into ``out/default`` (its manifest)."""
    return build_with(trial_job(options), None, options.out / "default", split, sensitivity)


def finish(options: SearchOptions, chosen: dict | None, default: dict) -> dict[str, Any]:
    """Write ``chosen.toml`` (trial ``chosen``'s recipe; None: the profile as it is, the default
    build having won) and build it into ``out/chosen`` with held-out accuracy."""
    command = " ".join(filter(None, ["edgekit build", options.model, "--target", options.target, "--recipe chosen.toml"]))
    what = (f"trial {chosen['number']}" if chosen
            else "no trial beat the default build's best int8 on size and latency: the profile as it is")
    header = (f"edgekit search: {what}; {options.out}, target {options.target}, model "
              f"{options.model or 'the digits example'}\nreproduce: {command}\n")
    job = trial_job(options)
    body = to_toml({"build": {"threads": job["threads"]}})  # the profile as it is, built as the search built it
    if chosen is not None:
        source = options.out / "trials" / f"{chosen['number']:04d}" / "overlay.toml"
        body = "\n".join(line for line in source.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    path = options.out / "chosen.toml"
    path.write_text(to_toml({}, header) + "\n" + body.strip() + "\n", encoding="utf-8")
    # its [build] threads decide, as they will for the user's rebuild (a resumed study's trial
    # may have been built with another run's share of the cores)
    manifest = build_with({**job, "threads": None}, path, options.out / "chosen", "heldout", record_only=True)
    # the default's best int8 when the profile won (its build also holds fp32 and other int8 files)
    heldout = measure(manifest, options.max_drop.metric) if chosen else default_int8(manifest, options.max_drop.metric)
    figures = chosen or default
    searched = chosen["sha256"] if chosen else default["sha256"]
    return {"file": str(path), "trial": chosen["number"] if chosen else None, "bundle": str(options.out / "chosen"),
            "heldout": heldout, "search": {k: figures[k] for k in ("quality", "figure", "bytes", "latency_ms", "latency_where")},
            # the artifact shipped is the one the search measured, byte for byte (builds are deterministic)
            "identical_to_searched": heldout["sha256"] == searched}


def resolution_notes(budget: Any, heldout: dict) -> list[str]:
    """What the user should know about the held-out figure: a top-1 budget finer than one sample
    of the held-out half cannot be resolved there (one extra error already exceeds it)."""
    samples = heldout.get("samples")
    if budget.metric is not Metric.TOP1_DROP or not samples or budget.bound >= 100 / samples:
        return []
    return [f"--max-drop {budget} is finer than one held-out sample ({100 / samples:.2f} pp of {samples}): "
            f"the held-out drop can only be 0 or at least that; a larger eval split resolves it"]


def artifact_hashes(bundle: Path) -> dict[str, str]:
    """sha256 of every model file of a bundle (what a rebuild must reproduce byte for byte)."""
    return {p.name: sha256_file(p) for p in sorted(bundle.iterdir()) if p.suffix in (".onnx", ".ort", ".tflite")}
