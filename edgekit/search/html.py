"""``report.html``: one self-contained page (plots as base64 PNG, no network), and the PNGs.

matplotlib is imported here only (Agg backend, no display).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

PLOTS = (("bytes", "size (KB)", 1e-3, "pareto_size.png"), ("latency_ms", "host p50 latency (ms)", 1.0, "pareto_latency.png"))


def _plot(summary: dict, key: str, label: str, scale: float, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    done = [r for r in summary["trials"] if r["state"] == "COMPLETE"]
    for feasible, colour, name in ((True, "tab:blue", "trial within budget"), (False, "tab:gray", "trial over budget")):
        pts = [r for r in done if r["feasible"] is feasible]
        ax.scatter([r[key] * scale for r in pts], [r["quality"] * 100 for r in pts], c=colour, s=30, label=name)
    default = summary["default"]["search"]
    ax.scatter([default[key] * scale], [default["quality"] * 100], marker="s", s=90, c="tab:orange", label="default build (best int8)")
    if summary["chosen"]:
        c = summary["chosen"]["search"]
        ax.scatter([c[key] * scale], [c["quality"] * 100], marker="*", s=220, c="tab:red", label="chosen")
    ax.set_xlabel(label)
    ax.set_ylabel(f"top-1 on {default['dataset']} (%)")
    ax.set_title(f"{summary['model']} for {summary['target']}: {label.split(' (')[0]} vs top-1")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no URL in the file


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict]) -> str:
    keys = ("number", "state", "feasible", "quality", "drop_pp", "bytes", "latency_ms", "artifact", "params", "duplicate_of", "error")
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(summary: dict) -> str:
    d, c = summary["default"]["heldout"], summary["chosen"]
    lines = [f"default build's best int8 ({d['artifact']}): {d['bytes']} B, {d['latency_ms']:.4f} ms, "
             f"held-out top-1 {d['quality'] * 100:.2f}% (reference {d['reference'] * 100:.2f}%)"]
    if c:
        h = c["heldout"]
        lines.append(f"chosen, trial {c['trial']} ({h['artifact']}): {h['bytes']} B, {h['latency_ms']:.4f} ms, held-out "
                     f"top-1 {h['quality'] * 100:.2f}% (drop {h['drop_pp']:.2f} pp; budget {summary['max_drop']})")
    else:
        lines.append("no trial met the budget: nothing chosen")
    return "".join(f"<li>{html.escape(line)}</li>" for line in lines)


def write(summary: dict, out: Path) -> Path:
    """Write the PNGs and ``out/report.html``; its path."""
    images = []
    for key, label, scale, name in PLOTS:
        _plot(summary, key, label, scale, out / name)
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        images.append(f'<img alt="Pareto front: {label} vs top-1" src="data:image/png;base64,{data}">')
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit search: {html.escape(summary['target'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
            "table{border-collapse:collapse}</style></head><body>"
            f"<h1>edgekit search: {html.escape(summary['model'])} for {html.escape(summary['target'])}</h1>"
            f"<ul>{_figures(summary)}</ul>{''.join(images)}<h2>Every trial</h2>{_table(summary['trials'])}</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
