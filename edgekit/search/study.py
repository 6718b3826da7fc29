"""The Optuna study: trials asked, built in a process pool, told back; kept in SQLite.

``out/study.db`` holds every trial, so ``--resume`` continues where a search stopped (trials a
killed search left running are marked failed, not redone). Objectives: top-1 on the search half
of the eval split (maximized), artifact bytes and host p50 latency (minimized); the constraint
is the accuracy budget (``Trial.set_constraint``), which Optuna's TPE sampler steers by.
"""
from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from edgekit.errors import UnsupportedError
from edgekit.search.options import SearchOptions
from edgekit.search.space import suggest
from edgekit.search.trial import run_trial
from edgekit.targets import TargetProfile

DIRECTIONS = ("maximize", "minimize", "minimize")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UnsupportedError("edgekit search needs optuna", "pip install 'edgekit[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(options: SearchOptions) -> Any:
    """The study in ``out/study.db``: new, or (``resume``) the one there, its stale running
    trials marked failed."""
    optuna = _optuna()
    db = options.out / "study.db"
    if db.exists() and not options.resume:
        raise UnsupportedError(f"{options.out} already holds a search (study.db)", "pass --resume, or another --out")
    options.out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="edgekit-search", storage=f"sqlite:///{db}", directions=list(DIRECTIONS),
                                load_if_exists=True)
    # seeded by the trials already held: a resumed search must not replay the first run's draws
    study.sampler = optuna.samplers.TPESampler(seed=options.seed + len(study.get_trials(deepcopy=False)), n_startup_trials=6)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    return study


def _tell(study: Any, trial: Any, result: dict, max_drop_pp: float) -> None:
    optuna = _optuna()
    for key, value in result.items():
        if key != "constraint":
            trial.set_user_attr(key, value)
    if "error" in result or result.get("latency_ms") is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("constraint", result["drop_pp"] - max_drop_pp)
    trial.set_constraint("max_drop", result["drop_pp"] - max_drop_pp)  # <= 0: within budget
    study.tell(trial, [result["quality"], float(result["bytes"]), result["latency_ms"]])


def _job(options: SearchOptions) -> dict:
    return {"target": options.target, "model": options.model, "out": str(options.out), "seed": options.seed,
            "latency_runs": options.latency_runs}


def run_study(study: Any, options: SearchOptions, profile: TargetProfile, progress: Callable[[Any, float], None]) -> None:
    """Run trials until the study holds ``options.trials`` or the time budget is spent;
    ``progress(study, started)`` after each one."""
    started, job = time.monotonic(), _job(options)
    pending: dict[Future, Any] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch/TF state in the workers
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=context) as pool:
        while True:
            while len(pending) < options.workers and _may_start(study, options, started, len(pending)):
                trial = study.ask()
                overlay = suggest(trial, profile)
                earlier = _same_params(study, trial)
                if earlier is not None:  # the same build again: its figures, not a second build
                    _tell(study, trial, {**earlier.user_attrs, "duplicate_of": earlier.number}, options.max_drop.bound)
                    progress(study, started)
                    continue
                pending[pool.submit(run_trial, job, trial.number, overlay)] = trial
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                _tell(study, pending.pop(future), _result(future), options.max_drop.bound)
                progress(study, started)


def _same_params(study: Any, trial: Any) -> Any:
    """A complete earlier trial with ``trial``'s parameters (builds are deterministic), or None;
    a failed one is tried again (its failure may have been the machine's)."""
    for other in study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.COMPLETE,)):
        if other.number != trial.number and other.params == trial.params:
            return other
    return None


def _result(future: Future) -> dict:
    try:
        return future.result()
    except Exception as exc:  # a worker that died (killed, out of memory) fails its trial only
        return {"error": f"worker died: {type(exc).__name__}: {exc}"}


def _may_start(study: Any, options: SearchOptions, started: float, running: int) -> bool:
    finished = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    if finished + running >= options.trials:
        return False
    return options.budget_s is None or time.monotonic() - started < options.budget_s
