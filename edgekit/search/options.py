"""``edgekit search`` options, declared once: the CLI and the Python API fill in :class:`SearchOptions`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.budget import MaxDrop, Metric
from edgekit.errors import UnsupportedError
from edgekit.search.devices import Devices

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_budget(text: str, flag: str = "--budget") -> float:
    """``"30m"`` / ``"90s"`` / ``"1h"`` / ``"45"`` (seconds) -> seconds (``flag`` names the option in errors)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UnsupportedError(f"cannot read {flag} {text!r}", "write a time such as 30m, 90s or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_search_budget(max_drop: str | None = None, min_cosine: float | None = None,
                        max_ppl_increase: str | None = None) -> MaxDrop:
    """The one budget of ``--max-drop 0.5pp`` / ``--min-cosine 0.998`` / ``--max-ppl-increase 5%``
    (none given: a 0.5 pp top-1 drop)."""
    given = [(flag, v) for flag, v in (("--max-drop", max_drop), ("--min-cosine", min_cosine),
                                       ("--max-ppl-increase", max_ppl_increase)) if v is not None]
    if len(given) > 1:
        raise UnsupportedError(f"{' and '.join(f for f, _ in given)} both bound the quality", "give one budget")
    if not given:
        return MaxDrop(Metric.TOP1_DROP, 0.5)
    flag, value = given[0]
    if flag == "--min-cosine":
        return MaxDrop(Metric.COSINE, float(value))
    if flag == "--max-ppl-increase":
        return MaxDrop.parse(f"ppl:{str(value).strip().removesuffix('%')}")
    return MaxDrop.parse(str(value))


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``edgekit search`` takes.

    Attributes:
        target: a bundled profile name or a profile ``.toml`` (as for ``edgekit build``).
        model: as for ``edgekit build``; None: the bundled digits example.
        max_drop: the quality budget every kept trial meets, against the reference model on the
            search half of the eval split: a top-1 drop for classifiers (``--max-drop 0.5pp``), a
            minimum mean cosine for embeddings (``--min-cosine 0.998``), a perplexity increase
            for language models (``--max-ppl-increase 5%``). A budget for another metric than
            the model's fails the first trial's measurement.
        trials: how many trials the study holds when the search stops (a resumed study counts
            the trials it already has).
        budget_s: wall-clock seconds after which no new trial starts; None: no time bound.
        workers: trials built at once, each in its own process.
        out: the search folder: ``study.db`` (the Optuna study), ``trials/``, ``chosen.toml``,
            ``chosen/`` (the chosen bundle), ``default/``, ``report.html`` and the plots.
        resume: continue the study in ``out``; without it an existing study is refused.
        seed: seeds the sampler (and each build), so a search can be repeated.
        latency_runs: timed host runs per artifact in each trial.
        ray: None: trials run in a local process pool; :data:`~edgekit.search.executors.RAY_LOCAL`
            (``--ray``): in a Ray runtime started here; an address (``--ray HOST:PORT``): on
            that Ray cluster, whose nodes must have edgekit installed.
        devices: time each trial's artifact on these devices (``--host``) instead of this host.
        compress: trials may also compress the model (prune, low-rank, distillation, QAT) when it
            has labelled training data; ``--no-compress``: quantization schemes only.
        trial_time_s: a trial still building after this many seconds is stopped and recorded as
            failed (``--trial-time``; compression with fine-tuning is what takes long); None: no
            limit.
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
    ray: str | None = None
    devices: Devices | None = None
    compress: bool = True
    trial_time_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.trials < 1 or self.workers < 1 or self.latency_runs < 1:
            raise UnsupportedError("--trials, --workers and --latency-runs must be >= 1", "give positive counts")
        if self.trial_time_s is not None and self.trial_time_s <= 0:
            raise UnsupportedError(f"--trial-time {self.trial_time_s:g}s is not a time", "write a time such as 10m or 90s")
        if self.devices is not None:
            self.devices.check()
