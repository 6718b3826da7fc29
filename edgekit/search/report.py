"""The text summary ``edgekit search`` prints, and how a trial's quality figure is written."""
from __future__ import annotations

from pathlib import Path

from edgekit.budget import Metric
from edgekit.report import table

#: how each budget metric's quality figure is named and written (table, progress, report.html)
QUALITY = {Metric.TOP1_DROP.value: ("top-1", lambda q: f"{q * 100:.2f}%"),
           Metric.COSINE.value: ("mean cosine", lambda q: f"{q:.5f}"),
           Metric.PPL_INCREASE.value: ("perplexity", lambda q: f"{q:.3f}")}
FIGURE = {Metric.TOP1_DROP.value: lambda f: f"drop {f:.2f} pp", Metric.COSINE.value: lambda f: f"cos {f:.5f}",
          Metric.PPL_INCREASE.value: lambda f: f"ppl {f:+.2f}%"}


def quality_text(figures: dict) -> str:
    """``top-1 99.44%`` / ``mean cosine 0.99871`` / ``perplexity 6.412`` for a trial or build."""
    name, fmt = QUALITY[figures["metric"]]
    return f"{name} {fmt(figures['quality'])}"


def _row(name: str, figures: dict) -> list[str]:
    return [name, figures["artifact"], f"{figures['bytes'] / 1e3:.1f} KB", f"{figures['latency_ms']:.4f} ms",
            figures["latency_where"], quality_text(figures), FIGURE[figures["metric"]](figures["figure"])]


def summary_table(summary: dict, out: Path) -> str:
    """Default build vs chosen artifact on the held-out half, then where the files are."""
    rows = [["", "artifact", "size", "p50 (its build)", "timed on", "held-out quality", "budget figure"],
            _row("default (best int8)", summary["default"]["heldout"])]
    chosen = summary["chosen"]  # a trial, or the profile as it is: a search always ends with a choice
    rows.append(_row(chosen_name(chosen), chosen["heldout"]))
    done = sum(r["state"] == "COMPLETE" for r in summary["trials"])
    failed = sum(r["state"] == "FAIL" for r in summary["trials"])
    lines = [table(rows), f"trials: {len(summary['trials'])} ({done} complete, {failed} failed) on {summary['ran_on']}; "
                          f"budget {summary['max_drop']}"]
    lines += [race_text(r) for r in summary.get("races", [])]
    lines += [f"note: {note}" for note in summary.get("notes", [])]
    lines.append(f"chosen: {chosen['file']} (bundle {chosen['bundle']})")
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)


def chosen_name(chosen: dict) -> str:
    return f"chosen (trial {chosen['trial']})" if chosen["trial"] is not None else "chosen (the profile as it is)"


def race_text(race: dict) -> str:
    """One line of the final race between a candidate and the default build's best int8."""
    verdict = "kept" if race["trial_ms"] <= race["default_ms"] else "slower: passed over"
    # three significant figures and the ratio: a 9 us model at four decimals printed a slower
    # candidate as "0.0094 ms vs 0.0094 ms"
    t, d = race["trial_ms"], race["default_ms"]
    return (f"race: trial {race['trial']} {t:#.3g} ms vs default {d:#.3g} ms ({t / d:.3f}x; "
            f"{race['runs']} runs each, {race['where']}): {verdict}")
