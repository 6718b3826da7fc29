"""Human-readable tables for the end of a build and for ``edgekit targets``."""
from __future__ import annotations

from edgekit.budget import COSINE_METRICS


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[list[str]]) -> str:
    """Left-aligned text table with a header rule."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_summary(manifest: dict) -> str:
    """One row per artifact: size, ratio to the fp32 artifact, verification, accuracy, latency."""
    if manifest.get("kind") == "llm":
        from edgekit.llm.report import llm_summary

        return llm_summary(manifest)
    artifacts = manifest["artifacts"]
    fp32 = {a["format"]: a["bytes"] for a in artifacts if a["precision"] == "fp32"}
    base = fp32.get("tflite") or fp32.get("onnx") or max((a["bytes"] for a in artifacts), default=1)
    accuracy = (manifest.get("accuracy") or {}).get("per_artifact", {})
    rows = [["artifact", "size", "vs fp32", "verified", "judged by", "max err", "cosine", "top-1 agr", "host kernels", "ARM (qemu)",
             "quality", "host p50", "on device"]]
    for a in artifacts:
        v = a["verification"]
        rows.append([a["file"], _fmt_bytes(a["bytes"]), f"{a['bytes'] / base:.2f}x", "PASS" if v.get("passed") else "FAIL",
                     _judged_by(v),
                     f"{v.get('max_abs_err', float('nan')):.3g}", f"{v.get('cosine', float('nan')):.5f}",
                     f"{v['top1_agreement']:.3f}" if v.get("top1_agreement") is not None else "-",
                     _host_kernels(a.get("host_kernels")), _arm(a),
                     _quality(manifest["accuracy"], a["file"]) if a["file"] in accuracy else "-",
                     f"{a['host_latency_ms']['p50']:.3f} ms" if a.get("host_latency_ms") else "-", _device_path(a)])
    text = table(rows)
    if manifest.get("compression"):
        text = compression_summary(manifest["compression"]) + "\n\n" + text
    acc = manifest.get("accuracy")
    if acc:
        shown = (lambda v: f"{v:.3f}") if acc["metric"] == "perplexity" else (lambda v: f"{v * 100:.2f}%")
        text += (f"\nreference ({manifest['model']}) {acc['metric']} on {acc['dataset']} ({acc['samples']} samples): "
                 f"{shown(acc['reference'])}")
        if acc.get("original") and acc["metric"] not in COSINE_METRICS:  # a cosine reference is 1 by definition
            text += f" compressed, {shown(acc['original']['reference'])} before compression"
    return text + f"\nbundle: {manifest.get('bundle_dir', '')}"


def failed_artifacts(manifest: dict) -> list[str]:
    """Artifacts whose target verdict or any further verdict (e.g. ARM kernels) failed."""
    return [a["file"] for a in manifest["artifacts"]
            if not a["verification"].get("passed") or any(not v.get("passed") for v in (a.get("verdicts") or {}).values())]


def _arm(artifact: dict) -> str:
    verdict = (artifact.get("verdicts") or {}).get("arm_emulated")
    return "-" if verdict is None else ("PASS" if verdict.get("passed") else "FAIL")


def _judged_by(verification: dict) -> str:
    """Which arithmetic gave the verdict: ORT's reference semantics, or this host's kernels."""
    if verification.get("semantics") == "reference":
        return f"ref ({verification['reference_file']})" if verification.get("reference_file") else "ref semantics"
    return f"kernels {verification['isa']}" if verification.get("isa") else "kernels"


def _host_kernels(figures: dict | None) -> str:
    """This host's fused-kernel figure beside a reference verdict (labelled, not judged)."""
    if not figures:
        return "-"
    return f"err {figures['max_abs_err']:.3g} ({figures['isa']})"


def _device_path(artifact: dict) -> str:
    """Whether the target's accelerator runs this artifact on its fast path (from the profile)."""
    compat = artifact.get("compatibility") or {}
    if "delegate_fast_precision" in compat:
        return "fast path" if compat["delegate_fast_precision"] and compat.get("fully_delegated", True) else "slow path"
    if "nnapi" in compat:
        return f"NNAPI {compat['nnapi']['suitability']}"
    return "-"


def _quality(accuracy: dict, file: str) -> str:
    """The task metric of one artifact: top-1 %, embedding cosine mean/min, or perplexity."""
    value = accuracy["per_artifact"][file]
    if accuracy["metric"] in COSINE_METRICS:
        return f"cos {value:.4f}/{accuracy['min_per_artifact'][file]:.4f}"
    if accuracy["metric"] == "perplexity":
        return f"ppl {value:.3f} ({accuracy['perplexity_delta'][file] * 100:+.1f}%)"
    return f"{value * 100:.2f}%"


def compression_summary(steps: list[dict]) -> str:
    """One row per compression step, measured on the PyTorch model after that step."""
    rows = [["step", "params", "MACs", "sparsity", "accuracy", "cosine", "fp32 ONNX", "ORT p50"]]
    for s in steps:
        rows.append([s["method"], f"{s['params']:,}", f"{s['macs']:,}" if s.get("macs") else "-", f"{s['sparsity']:.2f}",
                     f"{s['accuracy'] * 100:.2f}%" if s.get("accuracy") is not None else "-",
                     f"{s['cosine']:.4f}" if s.get("cosine") is not None else "-",
                     _fmt_bytes(s["onnx_fp32_bytes"]), f"{s['ort_fp32_p50_ms']:.3f} ms"])
    return "compression (PyTorch model after each step)\n" + table(rows)


def targets_table(profiles: list) -> str:
    rows = [["target", "cpu", "cores", "tflite", "ort", "description"]]
    for p in profiles:
        tfl = f"{p.tflite.delegate} {'/'.join(x.value for x in p.tflite.precisions)}" if p.tflite.enabled else "-"
        ort = f"{'/'.join(x.value for x in p.ort.precisions)} ({p.ort.int8.activation_type.value} act)" if p.ort.enabled else "-"
        rows.append([p.name, p.device.cpu, str(p.device.cores), tfl, ort, p.description])
    return table(rows)
