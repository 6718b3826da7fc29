"""What a search leaves the user: ``chosen.toml``, the chosen bundle, the default build beside it.

The chosen trial is the feasible Pareto-front trial with the smallest size plus latency, each
relative to the default build's best int8 artifact. Both the chosen overlay and the unchanged
profile are then built again with their accuracy measured on the held-out half of the eval split,
which no trial was judged on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.budget import Metric, higher_is_better
from edgekit.errors import UnsupportedError
from edgekit.search.options import SearchOptions
from edgekit.search.space import to_toml
from edgekit.search.trial import build_with, measure, shipped, trial_job

#: the figures of a trial a row carries (besides number, state, params, feasible)
ROW_KEYS = ("metric", "quality", "figure", "bytes", "latency_ms", "latency_where", "host_latency_ms", "artifact", "ran_on",
            "duplicate_of", "error")


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


def choose(rows: list[dict], default: dict, metric: Metric) -> dict | None:
    """The feasible front trial with the least bytes/default + latency/default."""
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    sign = 1 if higher_is_better(metric) else -1
    front = [r for r in feasible if not any(_dominates(o, r, sign) for o in feasible)]
    if not front:
        return None
    return min(front, key=lambda r: (r["bytes"] / default["bytes"] + r["latency_ms"] / default["latency_ms"], r["number"]))


def _dominates(a: dict, b: dict, quality_sign: int) -> bool:
    keys = (("quality", quality_sign), ("bytes", -1), ("latency_ms", -1))
    no_worse = all(a[k] * s >= b[k] * s for k, s in keys)
    return no_worse and any(a[k] * s > b[k] * s for k, s in keys)


def default_build(options: SearchOptions, split: str, sensitivity: bool = False) -> dict:
    """The profile as it is, built into ``out/default`` (its manifest)."""
    return build_with(trial_job(options), None, options.out / "default", split, sensitivity)


def finish(options: SearchOptions, chosen: dict) -> dict[str, Any]:
    """Write ``chosen.toml`` and build it into ``out/chosen`` with held-out accuracy."""
    source = options.out / "trials" / f"{chosen['number']:04d}" / "overlay.toml"
    command = " ".join(filter(None, ["edgekit build", options.model, "--target", options.target, "--overlay chosen.toml"]))
    header = (f"edgekit search: trial {chosen['number']} of {options.out}, target {options.target}, model "
              f"{options.model or 'the digits example'}\nreproduce: {command}\n")
    body = "\n".join(line for line in source.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    path = options.out / "chosen.toml"
    path.write_text(to_toml({}, header) + "\n" + body.strip() + "\n", encoding="utf-8")
    manifest = build_with(trial_job(options), path, options.out / "chosen", "heldout")
    return {"file": str(path), "trial": chosen["number"], "bundle": str(options.out / "chosen"),
            "heldout": measure(manifest, options.max_drop.metric),
            "search": {k: chosen[k] for k in ("quality", "figure", "bytes", "latency_ms", "latency_where")}}


def artifact_hashes(bundle: Path) -> dict[str, str]:
    """sha256 of every model file of a bundle (what a rebuild must reproduce byte for byte)."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bundle.iterdir())
            if p.suffix in (".onnx", ".ort", ".tflite")}
