"""The device runner as ``edgekit bench`` sees it, wherever it ran (here or over SSH).

Its file name in a bundle, what its exit codes mean, reading the JSON report it writes (or its
one-line reason when it wrote none), and marking the report with where and how it was made.
"""
from __future__ import annotations

import json
import time

from edgekit.errors import BenchError

# The runner's own exit codes (it imports only numpy, so edgekit may import it; the runner never
# imports edgekit back).
from edgekit.runner.edgekit_runner import EXIT_FAILED, EXIT_INTEGRITY, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

RUNNER = "edgekit_runner.py"
# The runner exits non-zero when correctness fails or an artifact errors but still writes JSON;
# these codes mean it wrote none (usage, integrity, runtime missing, or it crashed).
RUNNER_EXIT = {EXIT_OK: "all artifacts ran and passed", EXIT_FAILED: "correctness failed or an artifact errored",
               EXIT_USAGE: "bad bundle or usage", EXIT_INTEGRITY: "integrity: a file is missing or modified",
               EXIT_RUNTIME: "runtime or delegate not available"}


def parse_report(host: str, code: int, text: str | None, stderr: str) -> dict:
    """The runner's JSON, or a BenchError quoting the runner's own one-line reason."""
    if text:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BenchError(f"{host}: the runner wrote unreadable JSON ({exc})", "re-run; check the device's free disk space") from None
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if ln.startswith("edgekit-runner:")), lines[-1] if lines else "no output")
    meaning = RUNNER_EXIT.get(code, "the runner crashed")
    raise BenchError(f"{host}: the runner failed with exit code {code} ({meaning}): {reason}", _runner_hint(reason))


def _runner_hint(reason: str) -> str:
    if "No module named" in reason or "not available" in reason or "no TFLite runtime" in reason or "no ONNX Runtime" in reason:
        return "install the missing package on the device (pip install numpy ai-edge-litert onnxruntime)"
    if "sha256" in reason or "missing from the bundle" in reason or "truncated" in reason:
        return "rebuild the bundle and run bench again"
    return "run the runner by hand on the device to see its full output"


def passed(code: int, results: list[dict]) -> bool:
    """The one bench verdict, wherever the runner ran: exit 0, at least one result, and every
    artifact ran and met its tolerance; a run on the user's prompt (``--prompt``, no golden
    continuation to compare with: ``correctness`` null, as the runner itself rules) only ran."""
    return code == 0 and bool(results) and all(
        not r.get("error") and (r.get("correctness") is None or r["correctness"].get("passed")) for r in results)


def annotate(report: dict, host: str, code: int, wall_s: float, remote_dir: str | None = None) -> dict:
    """Mark where and how the report was made, and whether it :func:`passed`."""
    report["host"] = host
    report["exit_code"] = code
    report["passed"] = passed(code, report.get("results") or [])
    report["started_at"] = round(time.time() - wall_s, 3)  # epoch seconds: when this host's run began
    report["wall_s"] = round(wall_s, 3)
    if remote_dir is not None:
        report["remote_dir"] = remote_dir
    return report
