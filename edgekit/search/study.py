"""The Optuna study: trials asked, built in a process pool or on Ray, told back; kept in SQLite.

``out/study.db`` holds every trial, so ``--resume`` continues where a search stopped (trials a
killed search left running are marked failed, not redone). Objectives: the task quality on the
search half of the eval split (top-1 or cosine maximized, perplexity minimized), artifact bytes
and p50 latency (the device's with ``--host``, else the build host's), minimized; the constraint
is the quality budget (``Trial.set_constraint``), which Optuna's TPE sampler steers by.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edgekit.budget import MaxDrop, Metric, excess, higher_is_better
from edgekit.errors import UnsupportedError
from edgekit.search.executors import TrialPool
from edgekit.search.options import SearchOptions
from edgekit.search.space import suggest
from edgekit.search.trial import trial_job
from edgekit.targets import TargetProfile

#: the error recorded for a trial that was running when its search stopped (killed, crashed)
INTERRUPTED = "interrupted: the search stopped while this trial ran (killed or crashed); not redone"


def directions(metric: Metric) -> list[str]:
    """quality (maximized, except perplexity), bytes and latency (minimized)."""
    return ["maximize" if higher_is_better(metric) else "minimize", "minimize", "minimize"]


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
    study = optuna.create_study(study_name="edgekit-search", storage=f"sqlite:///{db}",
                                directions=directions(options.max_drop.metric), load_if_exists=True)
    # seeded by the trials already held: a resumed search must not replay the first run's draws
    study.sampler = optuna.samplers.TPESampler(seed=options.seed + len(study.get_trials(deepcopy=False)), n_startup_trials=6)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        optuna.trial.Trial(study, stale._trial_id).set_user_attr("error", INTERRUPTED)
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    return study


def _tell(study: Any, trial: Any, result: dict, budget: MaxDrop) -> None:
    optuna = _optuna()
    for key, value in result.items():
        if key != "constraint":
            trial.set_user_attr(key, value)
    if "error" in result or result.get("latency_ms") is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    over = excess(budget.metric, result["figure"], budget.bound)
    if not result.get("device_passed", True):  # wrong outputs on the device: never feasible
        over = max(over, 1.0)
    trial.set_user_attr("constraint", over)
    trial.set_constraint("budget", over)  # <= 0: within budget
    study.tell(trial, [result["quality"], float(result["bytes"]), result["latency_ms"]])


def run_study(study: Any, options: SearchOptions, profile: TargetProfile, pool: TrialPool,
              progress: Callable[[Any, float], None], sensitive: Sequence[str] = (), token_inputs: bool = False,
              trainable: bool = False) -> None:
    """Run trials in ``pool`` until the study holds ``options.trials`` or the time budget is
    spent; ``progress(study, started)`` after each one; ``sensitive``: the ORT layers, most
    sensitive first, trials may keep in float; ``token_inputs``: the model takes token ids;
    ``trainable``: it has labelled training data, so trials may compress it."""
    started, job = time.monotonic(), trial_job(options)
    pending: dict[int, Any] = {}
    while True:
        while len(pending) < options.workers and _may_start(study, options, started, len(pending)):
            trial = study.ask()
            overlay = suggest(trial, profile, sensitive, token_inputs, trainable and options.compress)
            earlier = _same_params(study, trial)
            if earlier is not None:  # the same build again: its figures, not a second build
                _tell(study, trial, {**earlier.user_attrs, "duplicate_of": earlier.number}, options.max_drop)
                progress(study, started)
                continue
            trial.set_user_attr("ran_on", pool.where)
            pool.submit(job, trial.number, overlay)
            pending[trial.number] = trial
        if not pending:
            return
        for number, result in pool.finished():
            _tell(study, pending.pop(number), result, options.max_drop)
            progress(study, started)


def _same_params(study: Any, trial: Any) -> Any:
    """A complete earlier trial with ``trial``'s parameters (builds are deterministic), or None;
    a failed one is tried again (its failure may have been the machine's)."""
    for other in study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.COMPLETE,)):
        if other.number != trial.number and other.params == trial.params:
            return other
    return None


def _may_start(study: Any, options: SearchOptions, started: float, running: int) -> bool:
    """Whether another trial may start: ``options.trials`` builds (a trial that reused an earlier
    trial's figures, ``duplicate_of``, does not count: Optuna's seeded samplers do propose the
    same point twice) and at most three times as many asks, within the time budget."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    built = [t for t in finished if "duplicate_of" not in t.user_attrs]
    if len(built) + running >= options.trials or len(trials) >= 3 * options.trials:
        return False
    return options.budget_s is None or time.monotonic() - started < options.budget_s
