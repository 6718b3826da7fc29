"""``report.html``: one self-contained page (plots as base64 PNG, no network), and the PNGs.

matplotlib is imported here only (Agg backend, no display).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from edgekit.search.report import QUALITY, chosen_name, quality_text, race_text

PLOTS = (("bytes", "size (KB)", 1e-3, "pareto_size.png"), ("latency_ms", "p50 latency (ms)", 1.0, "pareto_latency.png"))
#: sorts the trial table by a clicked header (or ``#sort=<column>`` in the URL), then, on the load
#: event, counts the plots that loaded with a size: what the headless-browser test reads back. Not
#: ``img.decode()``: its promise resolves off the page's clock, so a busy machine dumped the DOM
#: before it had (a CI failure); chromium's ``--dump-dom`` waits for ``load``, and the screenshot
#: test checks the pixels were drawn
SCRIPT = """
function sortBy(key, descending) {
  const table = document.getElementById('trials'), col = [...table.rows[0].cells].findIndex(c => c.dataset.key === key);
  if (col < 0) return;
  const rows = [...table.tBodies[0].rows], num = t => (t === '' || isNaN(Number(t))) ? null : Number(t);
  rows.sort((a, b) => {
    const x = a.cells[col].textContent, y = b.cells[col].textContent, nx = num(x), ny = num(y);
    const order = (nx !== null && ny !== null) ? nx - ny : (nx === null) - (ny === null) || x.localeCompare(y);
    return descending ? -order : order;
  });
  rows.forEach(r => table.tBodies[0].appendChild(r));
  table.dataset.sortedBy = key;
}
document.querySelectorAll('#trials th').forEach(th => th.addEventListener('click', () =>
  sortBy(th.dataset.key, document.getElementById('trials').dataset.sortedBy === th.dataset.key)));
const wanted = new URLSearchParams(location.hash.slice(1)).get('sort');
if (wanted) sortBy(wanted, false);
window.addEventListener('load', () => {
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.plotsShown = String(ok);
});
"""


def _plot(summary: dict, key: str, label: str, scale: float, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    q = scale_quality(summary)
    done = [r for r in summary["trials"] if r["state"] == "COMPLETE"]
    for feasible, colour, name in ((True, "tab:blue", "trial within budget"), (False, "tab:gray", "trial over budget")):
        pts = [r for r in done if r["feasible"] is feasible]
        ax.scatter([r[key] * scale for r in pts], [r["quality"] * q for r in pts], c=colour, s=30, label=name)
    default = summary["default"]["search"]
    ax.scatter([default[key] * scale], [default["quality"] * q], marker="s", s=90, c="tab:orange", label="default build (best int8)")
    c = summary["chosen"]["search"]
    ax.scatter([c[key] * scale], [c["quality"] * q], marker="*", s=220, c="tab:red", label="chosen")
    where = f" on {default['latency_where']}" if key == "latency_ms" else ""
    ax.set_xlabel(label.replace(" (", f"{where} (") if where else label)
    name = QUALITY[summary["metric"]][0]
    ax.set_ylabel(f"{name} on {default['dataset']}" + (" (%)" if scale_quality(summary) == 100 else ""))
    ax.set_title(f"{Path(summary['model']).name} for {summary['target']}: {label.split(' (')[0]} vs {name}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no URL in the file


def scale_quality(summary: dict) -> float:
    """Top-1 is plotted in %, cosine and perplexity as they are."""
    return 100.0 if summary["metric"] == "top1_drop_pp" else 1.0


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


TABLE_KEYS = ("number", "state", "feasible", "quality", "figure", "bytes", "latency_ms", "latency_where", "artifact", "params",
              "duplicate_of", "error")


def _table(rows: list[dict]) -> str:
    head = "".join(f'<th data-key="{k}" title="click to sort">{k}</th>' for k in TABLE_KEYS)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in TABLE_KEYS) + "</tr>" for r in rows)
    return f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figures(summary: dict) -> str:
    d, c = summary["default"]["heldout"], summary["chosen"]
    lines = [f"default build's best int8 ({d['artifact']}): {d['bytes']} B, {d['latency_ms']:.4f} ms on {d['latency_where']}, "
             f"held-out {quality_text(d)} (reference {quality_text({**d, 'quality': d['reference']}).split()[-1]})"]
    h = c["heldout"]
    lines.append(f"{chosen_name(c)} ({h['artifact']}): {h['bytes']} B, {h['latency_ms']:.4f} ms on "
                 f"{h['latency_where']}, held-out {quality_text(h)} (budget {summary['max_drop']})")
    lines += [race_text(r) for r in summary.get("races", [])] + [f"note: {n}" for n in summary.get("notes", [])]
    return "".join(f"<li>{html.escape(line)}</li>" for line in lines)


STYLE = ("body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
         "table{border-collapse:collapse}th{cursor:pointer;background:#f3f3f3}")


def _embed(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _images(summary: dict, out: Path) -> str:
    images = []
    for key, label, scale, name in PLOTS:
        _plot(summary, key, label, scale, out / name)
        images.append(_embed(out / name, f"Pareto front: {label} vs quality"))
    return "".join(images)


def _sensitivity_plot(layers: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.6 + 0.28 * len(layers)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [f"{r['node']} ({r['op']})" for r in layers][::-1]
    ax.barh(names, [max(r["loss"], 1e-9) for r in layers][::-1], color="tab:purple")
    ax.set_xscale("log")
    ax.set_xlabel("1 - output cosine to float, only this layer int8 (reference semantics)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("per-layer int8 sensitivity (most sensitive on top)")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def _sensitivity(summary: dict, out: Path) -> str:
    """The per-layer sensitivity section (plot and table), or nothing when it was not measured."""
    record = summary["default"]["search"].get("sensitivity") or {}
    layers = record.get("layers") or []
    if not layers:
        return ""
    _sensitivity_plot(layers, out / "sensitivity.png")
    rows = "".join(f"<tr><td>{_cell(r['node'])}</td><td>{_cell(r['op'])}</td><td>{r['cosine']:.6f}</td>"
                   f"<td>{r['top1_agreement']:.4f}</td></tr>" for r in layers)
    return (f"<h2>Which layers lose accuracy when quantized</h2><p>Each layer int8 alone ({html.escape(str(record['scheme']))}), "
            f"outputs compared with the float graph on {html.escape(record['compared_on'])}; trials keep the top ones in float "
            f"(parameter float_layers).</p>{_embed(out / 'sensitivity.png', 'per-layer int8 sensitivity')}"
            f"<table id='sensitivity'><thead><tr><th>node</th><th>op</th><th>cosine</th><th>top-1 agreement</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def write(summary: dict, out: Path) -> Path:
    """Write the PNGs and ``out/report.html``; its path."""
    title = f"edgekit search: {html.escape(summary['model'])} for {html.escape(summary['target'])}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head><body>"
            f"<h1>{title}</h1><ul>{_figures(summary)}</ul>{_images(summary, out)}{_sensitivity(summary, out)}<h2>Every trial</h2>"
            f"<p>Trials ran on {html.escape(summary['ran_on'])}; click a column to sort.</p>"
            f"{_table(summary['trials'])}<script>{SCRIPT}</script></body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
