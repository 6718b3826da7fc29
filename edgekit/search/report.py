"""The text summary ``edgekit search`` prints."""
from __future__ import annotations

from pathlib import Path

from edgekit.report import table


def _row(name: str, figures: dict) -> list[str]:
    return [name, figures["artifact"], f"{figures['bytes'] / 1e3:.1f} KB", f"{figures['latency_ms']:.4f} ms",
            f"{figures['quality'] * 100:.2f}%", f"{figures['drop_pp']:.2f} pp"]


def summary_table(summary: dict, out: Path) -> str:
    """Default build vs chosen artifact on the held-out half, then where the files are."""
    rows = [["", "artifact", "size", "host p50", "held-out top-1", "drop"], _row("default (best int8)", summary["default"]["heldout"])]
    chosen = summary["chosen"]
    if chosen:
        rows.append(_row(f"chosen (trial {chosen['trial']})", chosen["heldout"]))
    done = sum(r["state"] == "COMPLETE" for r in summary["trials"])
    failed = sum(r["state"] == "FAIL" for r in summary["trials"])
    lines = [table(rows), f"trials: {len(summary['trials'])} ({done} complete, {failed} failed); budget {summary['max_drop']}"]
    lines.append(f"chosen: {chosen['file']} (bundle {chosen['bundle']})" if chosen else "no trial met the budget")
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)
