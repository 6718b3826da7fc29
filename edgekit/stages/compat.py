"""Op-compatibility stage: which ops each artifact uses and which the target's accelerator takes.

TFLite: the flatbuffer's op list (read by the interpreter without delegates) against the
profile's ``delegate_ops``. ORT: the graph's op types, and where the profile asks for it, ORT's
own mobile usability checker, which estimates the NNAPI partitions.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

from edgekit.context import Artifact, BuildContext
from edgekit.stages.base import Stage


def tflite_ops(path: Path) -> collections.Counter:
    """Builtin op names and counts of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


def onnx_ops(path: Path) -> collections.Counter:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in graph.node)


def nnapi_partitions(path: Path) -> dict:
    """ORT's estimate of how the NNAPI EP would partition this graph."""
    import onnx
    from onnxruntime.tools.mobile_helpers.usability_checker import check_nnapi_partitions

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    info = check_nnapi_partitions(model, require_fixed_input_sizes=True)
    return {"nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes, "partitions": info.num_partitions,
            "unsupported_ops": sorted(info.unsupported_ops), "suitability": info.suitability().name}


def tflite_report(path: Path, delegate: str, delegate_ops: tuple[str, ...]) -> dict:
    ops = tflite_ops(path)
    unsupported = sorted(op for op in ops if delegate_ops and op not in delegate_ops)
    taken = sum(n for op, n in ops.items() if op not in unsupported)
    return {"ops": dict(sorted(ops.items())), "delegate": delegate, "delegate_unsupported_ops": unsupported,
            "delegated_fraction": round(taken / max(1, sum(ops.values())), 4),
            "fully_delegated": not unsupported}


def ort_report(path: Path, provider: str, check_partitions: bool) -> dict:
    report = {"ops": dict(sorted(onnx_ops(path).items())), "provider": provider}
    if check_partitions:
        report["nnapi"] = nnapi_partitions(path)
        report["fully_delegated"] = report["nnapi"]["partitions"] == 1 and not report["nnapi"]["unsupported_ops"]
    return report


class Compatibility(Stage):
    """Write ``reports/<artifact>.json`` and a summary into each artifact's manifest entry."""

    name = "compat"
    description = "checking op compatibility"

    def run(self, ctx: BuildContext) -> None:
        reports = ctx.bundle_dir / "reports"
        reports.mkdir(exist_ok=True)
        for artifact in ctx.artifacts:
            report = self._report(ctx, artifact)
            (reports / f"{artifact.file}.json").write_text(json.dumps(report, indent=2) + "\n")
            artifact.compatibility = {k: v for k, v in report.items() if k != "ops"}
            artifact.compatibility["report"] = f"reports/{artifact.file}.json"

    @staticmethod
    def _report(ctx: BuildContext, artifact: Artifact) -> dict:
        path = ctx.bundle_dir / artifact.file
        if artifact.format == "tflite":
            cfg = ctx.profile.tflite
            report = tflite_report(path, cfg.delegate, cfg.delegate_ops)
            report["delegate_fast_precision"] = artifact.precision in {p.value for p in cfg.fast_precisions}
            return report
        # .ort is a serialized form of the same graph as its .onnx: analyse the .onnx
        source = path.with_suffix(".onnx")
        cfg = ctx.profile.ort
        return ort_report(source, cfg.provider, cfg.mobile_usability_check)
