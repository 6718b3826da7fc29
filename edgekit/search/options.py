"""``edgekit search`` options, declared once: the CLI and the Python API fill in :class:`SearchOptions`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.budget import MaxDrop, Metric
from edgekit.errors import UnsupportedError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_budget(text: str) -> float:
    """``"30m"`` / ``"90s"`` / ``"1h"`` / ``"45"`` (seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UnsupportedError(f"cannot read --budget {text!r}", "write a time such as 30m, 90s or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``edgekit search`` takes.

    Attributes:
        target: a bundled profile name or a profile ``.toml`` (as for ``edgekit build``).
        model: as for ``edgekit build``; None: the bundled digits example.
        max_drop: the accuracy budget every kept trial meets, against the reference model on
            the search half of the eval split (classifiers: ``MaxDrop.parse("0.5pp")``).
        trials: how many trials the study holds when the search stops (a resumed study counts
            the trials it already has).
        budget_s: wall-clock seconds after which no new trial starts; None: no time bound.
        workers: trials built at once, each in its own process.
        out: the search folder: ``study.db`` (the Optuna study), ``trials/``, ``chosen.toml``,
            ``chosen/`` (the chosen bundle), ``default/``, ``report.html`` and the plots.
        resume: continue the study in ``out``; without it an existing study is refused.
        seed: seeds the sampler (and each build), so a search can be repeated.
        latency_runs: timed host runs per artifact in each trial.
    """

    target: str
    model: str | None = None
    max_drop: MaxDrop = MaxDrop(Metric.TOP1_DROP, 0.5)
    trials: int = 20
    budget_s: float | None = None
    workers: int = 1
    out: Path = Path("search")
    resume: bool = False
    seed: int = 0
    latency_runs: int = 50

    def __post_init__(self) -> None:
        if self.trials < 1 or self.workers < 1 or self.latency_runs < 1:
            raise UnsupportedError("--trials, --workers and --latency-runs must be >= 1", "give positive counts")
        if self.max_drop.metric is not Metric.TOP1_DROP:
            raise UnsupportedError(f"--max-drop {self.max_drop}: search judges classifiers by top-1 only so far",
                                   "give a top-1 drop such as 0.5pp")
