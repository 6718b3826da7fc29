"""edgekit search scale-out: trials per minute with 1 and 2 workers, process pool and Ray, same trials.

    python benchmarks/search_scaleout.py [--trials 8] [--rounds 2] [--target rpi4]

The same fixed list of trial overlays (the digits example for the target, drawn once from the
search space with a seeded sampler, every one distinct) runs through each executor of
``edgekit.search.executors``: the local process pool with 1 and 2 workers, and a local Ray
runtime with 1 and 2 workers (``num_cpus`` = workers). The clock runs from the first submit to
the last result, so start-up (spawning workers, starting Ray) is inside it, as a user sees it;
two untimed trials first warm the file cache, so the first timed row is not the cold one.
Writes benchmarks/results/search_scaleout.{json,md} with the host's CPU flags and the load
average before each run: measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgekit.search import SearchOptions  # noqa: E402
from edgekit.search.executors import RAY_LOCAL, open_pool  # noqa: E402
from edgekit.search.space import suggest  # noqa: E402
from edgekit.search.trial import trial_job  # noqa: E402
from edgekit.targets import load_target  # noqa: E402
from edgekit.verify.hostinfo import describe  # noqa: E402


def overlays(target: str, count: int) -> list[dict]:
    """``count`` distinct overlays of the target's space (seeded: the same list every run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    profile, seen, found = load_target(target), set(), []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    while len(found) < count:
        trial = study.ask()
        overlay = suggest(trial, profile)
        key = json.dumps(overlay, sort_keys=True)
        study.tell(trial, 0.0)
        if key not in seen:
            seen.add(key)
            found.append(overlay)
    return found


def run(executor: str | None, workers: int, target: str, trials: list[dict], out: Path) -> dict:
    job = trial_job(SearchOptions(target=target, out=out, latency_runs=20, workers=workers))
    load = os.getloadavg()[0]
    started = time.monotonic()
    pool = open_pool(executor, workers, job["threads"])
    results: dict[int, dict] = {}
    try:
        queue = list(enumerate(trials))
        while queue or pool.running():
            while queue and pool.running() < workers:
                number, overlay = queue.pop(0)
                pool.submit(job, number, overlay)
            results.update(pool.finished())
        where = pool.where
    finally:
        pool.close()
    seconds = time.monotonic() - started
    failed = sum("error" in r for r in results.values())
    return {"executor": "ray" if executor else "process pool", "workers": workers, "threads": job["threads"],
            "trials": len(trials), "failed": failed,
            "seconds": round(seconds, 1), "trials_per_min": round(60 * len(trials) / seconds, 2), "where": where,
            "load_before": round(load, 2)}


def _merged(found: list[dict]) -> dict:
    """One config's rounds: total trials over total seconds, the per-round rates beside it."""
    seconds, trials = sum(r["seconds"] for r in found), sum(r["trials"] for r in found)
    return {**found[0], "trials": trials, "failed": sum(r["failed"] for r in found), "seconds": round(seconds, 1),
            "trials_per_min": round(60 * trials / seconds, 2), "rounds": [r["trials_per_min"] for r in found],
            "load_before": max(r["load_before"] for r in found)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of every config (alternating order).")
    args = parser.parse_args()
    trials = overlays(args.target, args.trials)
    configs = [(executor, workers) for executor in (None, RAY_LOCAL) for workers in (1, 2)]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        # untimed: the first build after a cold start also reads torch/TF/onnx2tf from disk
        run(None, 1, args.target, trials[:2], Path(tmp) / "warm-up")
        for round_index in range(args.rounds):  # forward, then backward: a drift in the machine hits every config alike
            for executor, workers in configs if round_index % 2 == 0 else configs[::-1]:
                row = run(executor, workers, args.target, trials, Path(tmp) / f"{executor}-{workers}-{round_index}")
                runs[(executor, workers)].append(row)
                print(json.dumps(row), flush=True)
    rows = [_merged(found) for found in runs.values()]
    for row in rows:
        one = next(r for r in rows if r["executor"] == row["executor"] and r["workers"] == 1)
        row["speed_up"] = round(row["trials_per_min"] / one["trials_per_min"], 2)
    host = describe()
    result = {"host": {k: host[k] for k in ("arch", "cpu", "int8_isa", "flags")}, "cores": os.cpu_count(), "rows": rows,
              "model": "example:digits", "target": args.target}
    (HERE / "results" / "search_scaleout.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# edgekit search scale-out: {args.trials} digits trials for {args.target}", "",
             f"Host: {host['cpu']} ({host['arch']}, {os.cpu_count()} cores, {' '.join(host['flags'])}). The same "
             "trial overlays for every row; the clock includes starting the workers / Ray. Each trial builds with "
             "its share of the cores (threads/trial: torch, the host sessions, OpenMP and TF pools).", "",
             f"Each config ran {args.rounds} times (alternating order); trials/min is over all its runs.", "",
             "| executor | workers | threads/trial | trials | failed | seconds | trials/min | per run | vs 1 worker | max load before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['executor']} | {r['workers']} | {r['threads']} | {r['trials']} | {r['failed']} | "
              f"{r['seconds']} | {r['trials_per_min']} | "
              f"{', '.join(map(str, r['rounds']))} | {r['speed_up']}x | {r['load_before']} |" for r in rows]
    (HERE / "results" / "search_scaleout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
