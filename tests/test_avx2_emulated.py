"""The AVX2-only x86 CPU class (no VNNI), emulated: ``qemu-x86_64 -cpu Haswell``.

Why: on such CPUs ONNX Runtime's u8s8 kernels saturate in int16 (GUIDE.md section 2), so the
digits rpi4 int8 QDQ model gives max abs err 0.606 through the host's kernels instead of 0.345.
Build machines differ; these tests prove, on any x86 host, that verdicts come from the target's
arithmetic there too, and that the host profile's scheme holds its tolerance on that CPU class.
TCG has CPUID for Haswell (numpy and onnxruntime see AVX2, no AVX-512/VNNI); timings mean nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.runner import RUNNER_PATH as RUNNER

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "runner_standalone" / "example_rpi4"
pytestmark = pytest.mark.x86_emulated


@pytest.fixture(scope="module")
def haswell(require_tool) -> list[str]:
    """argv prefix running this interpreter on an emulated AVX2-only CPU (Debian's qemu-user,
    installed by scripts/setup-system.sh; missing, the tests skip, or fail under CI=true)."""
    return [require_tool("qemu-x86_64", "qemu-user"), "-cpu", "Haswell", sys.executable]


def _run(argv: list[str], cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [*argv, "-c", code] if code else argv
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_emulated_cpu_is_avx2_only(haswell, tmp_path: Path) -> None:
    proc = _run(haswell, tmp_path,
                "from edgekit.verify import hostinfo; print(hostinfo.int8_isa(), hostinfo.has_any(hostinfo.VNNI_FEATURES))")
    assert proc.stdout.split() == ["avx2", "False"], proc.stderr[-500:]


@pytest.mark.parametrize("artifact", ["model_int8.onnx", "model_int8.ort"])
def test_runner_verdict_is_the_targets_on_avx2(haswell, tmp_path: Path, artifact: str) -> None:
    """The committed rpi4 bundle: PASS by reference semantics (0.345), while this CPU's kernels,
    reported beside it, give the saturated 0.606 that broke the build on such hosts."""
    out = tmp_path / "r.json"
    proc = _run([*haswell, str(RUNNER), str(BUNDLE), "--artifact", artifact, "--runs", "1", "--warmup", "0",
                 "--min-seconds", "0", "--json", str(out), "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    correctness = json.loads(out.read_text())["results"][0]["correctness"]
    assert correctness["semantics"] == "reference" and correctness["passed"]
    assert correctness["max_abs_err"] == pytest.approx(0.3452, abs=2e-3)
    host = correctness["host_kernels"]
    assert host["isa"] == "avx2" and host["judged"] is False
    assert host["max_abs_err"] == pytest.approx(0.606, abs=5e-3)
    assert host["max_abs_err"] > correctness["tolerance"]["max_abs_err"]  # would have failed before


BUILD_SIDE = textwrap.dedent('''
    import json, sys
    import numpy as np
    from pathlib import Path
    from edgekit.verify.hostrun import ORTSession
    from edgekit.runner.edgekit_runner import compare
    from edgekit.tensors import TensorSpec
    bundle = Path(sys.argv[1])
    golden = np.load(bundle / "golden.npz", allow_pickle=False)
    ins, outs = [TensorSpec("input", (1, 1, 8, 8))], [TensorSpec("logits", (1, 10))]
    res = {}
    for reference in (True, False):
        got = ORTSession(bundle / "model_int8.onnx", ins, outs, 1, reference=reference).run_batch({"input": golden["input"]})
        res[str(reference)] = compare(got, {"logits": golden["logits"]}, True)["max_abs_err"]
    print(json.dumps(res))
''')


def test_build_reference_session_is_cpu_independent(haswell, tmp_path: Path) -> None:
    """The build's own reference session (edgekit.verify.hostrun) gives the same figure on AVX2 as on
    any other x86 CPU; its kernel session gives the saturated one."""
    proc = _run([*haswell, "-c", BUILD_SIDE, str(BUNDLE)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["True"] == pytest.approx(0.3452, abs=2e-3)
    assert figures["False"] == pytest.approx(0.606, abs=5e-3)


HOST_SCHEME = textwrap.dedent('''
    import json, sys, tempfile
    import numpy as np
    from pathlib import Path
    from edgekit.calibration import load_named
    from edgekit.verify.hostrun import ORTSession
    from edgekit.runner.edgekit_runner import broken_bounds, compare
    from edgekit.quantize.ort_static import quantize_qdq, reduce_range_for
    from edgekit.targets import load_target
    from edgekit.tensors import TensorSpec
    bundle = Path(sys.argv[1])
    manifest = json.loads((bundle / "manifest.json").read_text())
    scheme = load_target("host").ort.int8
    golden = np.load(bundle / "golden.npz", allow_pickle=False)
    ins, outs = [TensorSpec("input", (1, 1, 8, 8))], [TensorSpec("logits", (1, 10))]
    calibration = load_named("digits", ins).calibration
    with tempfile.TemporaryDirectory() as tmp:
        quantize_qdq(bundle / "model_fp32.onnx", Path(tmp) / "q.onnx", calibration, scheme, Path(tmp))
        got = ORTSession(Path(tmp) / "q.onnx", ins, outs, 1).run_batch({"input": golden["input"]})
    metrics = compare(got, {"logits": golden["logits"]}, True)
    tol = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.onnx")["tolerance"]
    print(json.dumps({"reduce_range": reduce_range_for(scheme), "metrics": metrics, "broken": broken_bounds(metrics, tol)}))
''')


def test_host_profile_holds_on_avx2(haswell, example_host_bundle, tmp_path: Path) -> None:
    """Quantized ON the emulated AVX2 CPU with the host profile, run by its kernels: reduce_range
    is chosen and the artifact holds the profile's int8 tolerance there."""
    bundle, _ = example_host_bundle
    proc = _run([*haswell, "-c", HOST_SCHEME, str(bundle)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["reduce_range"] is True
    assert result["broken"] == [], result
    assert result["metrics"]["cosine"] >= 0.999 and result["metrics"]["top1_agreement"] == 1.0
