"""The build table of an LLM bundle: size, verdict, held-out quality and host generation speed."""
from __future__ import annotations

from edgekit.report import _fmt_bytes, _judged_by, table


def _num(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _quality_cells(quality: dict | None) -> list[str]:
    q = quality or {}
    ppl = "-" if q.get("perplexity") is None else f"{q['perplexity']:.3f} ({q.get('perplexity_increase_pct', 0):+.2f}%)"
    return [ppl, _num(q.get("top1_agreement"), ".3f"), _num(q.get("continuation_match"), ".3f")]


def _speed_cells(speed: dict | None) -> list[str]:
    s = speed or {}
    return [_num(s.get("ttft_ms"), ".1f", " ms"), _num(s.get("prefill_tok_s"), ".1f"), _num(s.get("decode_tok_s"), ".1f")]


def _scheme(artifact: dict) -> str:
    q = artifact.get("quantization") or {}
    return q.get("scheme") or artifact["precision"]


def llm_summary(manifest: dict) -> str:
    artifacts = manifest["artifacts"]
    base = next((a["bytes"] for a in artifacts if a["precision"] == "fp32"), None) or max(a["bytes"] for a in artifacts)
    quality = (manifest.get("accuracy") or {}).get("artifacts", {})
    rows = [["artifact", "size", "vs fp32", "scheme", "verified", "judged by", "token match", "logits cos", "host kernels",
             "ppl held-out", "top-1 agr", "greedy match", "TTFT", "prefill tok/s", "decode tok/s"]]
    for a in artifacts:
        v, host = a["verification"], a.get("host_kernels") or {}
        rows.append([a["file"], _fmt_bytes(a["bytes"]), f"{a['bytes'] / base:.2f}x", _scheme(a),
                     "PASS" if v.get("passed") else "FAIL", _judged_by(v), _num(v.get("token_match"), ".3f"),
                     _num(v.get("logits_cosine"), ".5f"),
                     "-" if not host else f"{host['token_match']:.3f} / {host['logits_cosine']:.4f} ({host.get('isa')})",
                     *_quality_cells(quality.get(a["file"])), *_speed_cells(a.get("host_latency_ms"))])
    for a in artifacts:
        for name, figures in ((a.get("quantization") or {}).get("baselines") or {}).items():
            rows.append([f"  {name} (not shipped)", _fmt_bytes(figures.get("bytes", 0)) if figures.get("bytes") else "-",
                         f"{figures['bytes'] / base:.2f}x" if figures.get("bytes") else "-", name, "", "", "", "", "",
                         *_quality_cells(figures), "-", "-", "-"])
    text = table(rows)
    acc = manifest.get("accuracy")
    if acc:
        ref = acc["reference"]
        text += (f"\noriginal ({manifest['model']}): held-out perplexity {ref['perplexity']:.3f} on {ref['tokens']} tokens; "
                 f"greedy match = tokens equal to the original's up to the first difference; speed: build host")
    return text + f"\nbundle: {manifest.get('bundle_dir', '')}"
