"""Figures written into a bundle. matplotlib is imported here only (Agg, no display needed)."""
from __future__ import annotations

from pathlib import Path


def size_vs_accuracy(manifest: dict, out_png: Path) -> Path | None:
    """Bytes vs accuracy of every artifact, and of the model after each compression step."""
    accuracy = manifest.get("accuracy")
    if not accuracy:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale = 1.0 if accuracy["metric"] == "perplexity" else 100.0  # top-1 and cosine shown in %
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for a in manifest["artifacts"]:
        if a["file"] in accuracy["per_artifact"]:
            ax.scatter(a["bytes"] / 1e3, accuracy["per_artifact"][a["file"]] * scale, marker="o", s=50)
            ax.annotate(a["file"], (a["bytes"] / 1e3, accuracy["per_artifact"][a["file"]] * scale), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    steps = [s for s in manifest.get("compression") or [] if s.get("accuracy") is not None]
    if steps:
        xs, ys = [s["onnx_fp32_bytes"] / 1e3 for s in steps], [s["accuracy"] * 100 for s in steps]
        ax.plot(xs, ys, "s--", color="gray", label="PyTorch model after each compression step (fp32 ONNX bytes)")
        for s, x, y in zip(steps, xs, ys):
            ax.annotate(s["method"], (x, y), fontsize=8, xytext=(4, -10), textcoords="offset points", color="gray")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (KB, log scale)")
    ax.set_ylabel(f"{accuracy['metric']} on {accuracy['dataset']}" + ("" if scale == 1.0 else " (%)"))
    ax.set_title(f"{manifest['model']} for {manifest['target']}: size vs accuracy")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png)
    return out_png
