"""``edgekit compare``: put several runner reports side by side, as a table and a figure.

Input files are what ``edgekit_runner.py --json`` writes (one report) or what ``edgekit bench``
saves (a list of reports, one per host). Every artifact result becomes one row; ratios are to the
FIRST row that has a latency (the first artifact of the first file), or, with ``per_artifact``, to
the same artifact in the first file, which is what comparing devices usually wants.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from edgekit.errors import BenchError
from edgekit.report import table

EMULATED_NOTE = "emulated - latency not comparable"
HINT = "pass files written by `edgekit bench --out FILE` or `edgekit_runner.py BUNDLE --json FILE`"


# ----------------------------------------------------------------------------- loading
def load_reports(paths: Sequence[Path]) -> list[tuple[str, dict]]:
    """``(source label, report)`` per runner report, in file order; a bench list is flattened."""
    if not paths:
        raise BenchError("nothing to compare", HINT)
    loaded: list[tuple[str, dict]] = []
    for path in map(Path, paths):
        reports = _read(path)
        for report in reports:
            label = path.name if len(reports) == 1 else f"{path.name}[{report.get('host', len(loaded))}]"
            loaded.append((label, report))
    return loaded


def _read(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}", HINT) from None
    except ValueError as exc:
        raise BenchError(f"{path} is not JSON ({exc})", HINT) from None
    reports = data if isinstance(data, list) else [data]
    if not reports or not all(isinstance(r, dict) and isinstance(r.get("results"), list) for r in reports):
        raise BenchError(f"{path} is not a runner report (no 'results' list)", HINT)
    return reports


def device_label(report: dict) -> str:
    """``machine cpu``; a remote host leads, so two devices with the same CPU stay apart."""
    dev = report.get("device") or {}
    hardware = " ".join(str(x) for x in (dev.get("machine"), dev.get("cpu_model")) if x) or "?"
    host = report.get("host")
    return f"{host} ({hardware})" if host and host != "local" else hardware


# ----------------------------------------------------------------------------- rows
def _row(source: str, report: dict, r: dict) -> dict:
    rt, lat = r.get("runtime") or {}, r.get("latency_ms") or {}
    mem, cor = r.get("memory_mb") or {}, r.get("correctness") or {}
    return {"source": source, "host": report.get("host"), "device": device_label(report), "artifact": r.get("file"),
            "format": r.get("format"), "precision": r.get("precision"), "bytes": r.get("bytes"),
            "runtime": rt.get("name"), "threads": rt.get("threads"), "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
            "mean_ms": lat.get("mean"), "peak_rss_mb": mem.get("peak_rss"), "max_abs_err": cor.get("max_abs_err"),
            "cosine": cor.get("cosine"), "top1_agreement": cor.get("top1_agreement"), "passed": bool(cor.get("passed")),
            "error": r.get("error"), "emulated": bool(r.get("emulated")), "samples_ms": r.get("samples_ms") or []}


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def compare(paths: Sequence[Path], *, per_artifact: bool = False) -> dict:
    """Load the reports and build the comparison rows with ratios (p50 and peak RSS).

    Returns ``{"rows": [...], "baseline": {...}, "emulated": bool, "sources": [...]}``; each row
    holds source, device, artifact, bytes, p50/p99 ms, peak RSS MB, correctness, ``samples_ms``
    and ``p50_ratio`` / ``rss_ratio`` (None where a figure is missing).
    """
    loaded = load_reports(paths)
    rows = [_row(source, report, r) for source, report in loaded for r in report["results"]]
    if not rows:
        raise BenchError("the reports hold no artifact results", HINT)
    timed = [row for row in rows if row["p50_ms"] is not None]
    baseline = timed[0] if timed else rows[0]
    first = {row["artifact"]: row for row in timed if row["source"] == baseline["source"]}
    for row in rows:
        base = first.get(row["artifact"], baseline) if per_artifact else baseline
        row["p50_ratio"] = _ratio(row["p50_ms"], base["p50_ms"])
        row["rss_ratio"] = _ratio(row["peak_rss_mb"], base["peak_rss_mb"])
    return {"rows": rows, "baseline": {k: baseline[k] for k in ("source", "artifact", "device")},
            "per_artifact": per_artifact, "emulated": any(row["emulated"] for row in rows),
            "sources": [source for source, _ in loaded]}


# ----------------------------------------------------------------------------- table
def _num(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _verdict(row: dict) -> str:
    if row["error"]:
        return "ERROR"
    return ("PASS" if row["passed"] else "FAIL") + f" (err {_num(row['max_abs_err'], '.2g')})"


def render_compare(data: dict) -> str:
    """The rows as a text table, then what the ratios are relative to."""
    rows = [["source", "artifact", "device", "threads", "p50 ms", "p99 ms", "peak RSS MB", "correctness", "p50 ratio",
             "RSS ratio"]]
    for row in data["rows"]:
        rows.append([row["source"], str(row["artifact"]), row["device"] + (" *" if row["emulated"] else ""),
                     _num(row["threads"], "d"), _num(row["p50_ms"], ".4g"), _num(row["p99_ms"], ".4g"),
                     _num(row["peak_rss_mb"], ".1f"), _verdict(row), _num(row["p50_ratio"], ".2f", "x"),
                     _num(row["rss_ratio"], ".2f", "x")])
    base = data["baseline"]
    relative = "the same artifact in " + base["source"] if data.get("per_artifact") else f"{base['source']} {base['artifact']}"
    lines = [table(rows), f"ratios relative to {relative} ({base['device']})"]
    if data["emulated"]:
        lines.append(f"* {EMULATED_NOTE}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure
def plot(data: dict, out_png: Path) -> None:
    """Two panels: latency distribution per row (box plot of ``samples_ms``) and size vs p50.

    Drawn on a bare Figure with the Agg canvas: no pyplot, no global backend switch, no display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = data["rows"]
    colours = _group_colours(rows)
    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    _latency_panel(fig.add_subplot(1, 2, 1), rows, colours)
    _size_panel(fig.add_subplot(1, 2, 2), rows, colours)
    title = "edgekit compare"
    if data["emulated"]:
        title += f" ({EMULATED_NOTE})"
    fig.suptitle(title)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")


def _group(row: dict) -> str:
    label = f"{row['source']}: {row['device']}"
    return label + f" ({EMULATED_NOTE})" if row["emulated"] else label


def _group_colours(rows: list[dict]) -> dict[str, tuple]:
    """One colour per (source, device): the same device reads the same in both panels."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    groups = list(dict.fromkeys(_group(r) for r in rows))
    return {g: cmap(i % 10) for i, g in enumerate(groups)}


def _latency_panel(ax, rows: list[dict], colours: dict[str, tuple]) -> None:
    timed = [r for r in rows if r["samples_ms"]]
    if not timed:
        ax.text(0.5, 0.5, "no latency samples", ha="center", va="center", transform=ax.transAxes)
        return
    boxes = ax.boxplot([r["samples_ms"] for r in timed], patch_artist=True, whis=(1, 99),
                       flierprops={"markersize": 2, "alpha": 0.3}, medianprops={"color": "black"})
    for patch, row in zip(boxes["boxes"], timed):
        patch.set_facecolor(colours[_group(row)])
        patch.set_alpha(0.6)
        if row["emulated"]:
            patch.set_hatch("//")
    ax.set_xticks(range(1, len(timed) + 1), [f"{r['artifact']}\n{r['source']}" for r in timed], rotation=30, ha="right",
                  fontsize=8)
    low = min(min(r["samples_ms"]) for r in timed)
    high = max(max(r["samples_ms"]) for r in timed)
    if low > 0 and high / low > 50:  # µs-fast and ms-slow artifacts on one axis
        ax.set_yscale("log")
    ax.set_ylabel("latency per inference (ms)")
    ax.set_title("latency distribution (whiskers p1-p99)")
    ax.grid(axis="y", alpha=0.3)


def _size_panel(ax, rows: list[dict], colours: dict[str, tuple]) -> None:
    seen: set[str] = set()
    for row in rows:
        if row["bytes"] is None or row["p50_ms"] is None:
            continue
        group = _group(row)
        style = {"marker": "x"} if row["emulated"] else {"marker": "o", "edgecolor": "black"}  # x: hollow = not comparable
        ax.scatter(row["bytes"] / 1024, row["p50_ms"], color=colours[group], s=60, label=None if group in seen else group, **style)
        seen.add(group)
        ax.annotate(row["artifact"], (row["bytes"] / 1024, row["p50_ms"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    ax.set_xlabel("artifact size (KB)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("size vs p50 latency")
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=7, loc="best")
