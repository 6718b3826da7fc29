"""The runner fails closed: no sha256 means no run, and no manifest path leaves the bundle."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ALL_RUNTIMES = ["ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime"]


def _edit(bundle: Path, change) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _one_line(proc, *needles: str) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("value", [None, "", "not-a-digest"])
def test_artifact_without_sha256_is_refused(bundle: Path, cli, fast, value) -> None:
    def drop(manifest: dict) -> None:
        art = next(a for a in manifest["artifacts"] if a["file"] == "model_fp32.tflite")
        if value is None:
            del art["sha256"]
        else:
            art["sha256"] = value

    _edit(bundle, drop)
    # runtimes unimportable: had the runner loaded the file, the message would name the runtime
    proc = cli(bundle, *fast, "--artifact", "model_fp32.tflite", block=ALL_RUNTIMES)
    _one_line(proc, "model_fp32.tflite", "gives no sha256", "rebuild or re-copy the bundle")


def test_golden_without_sha256_is_refused(bundle: Path, cli, fast) -> None:
    _edit(bundle, lambda m: m["golden"].pop("sha256"))
    proc = cli(bundle, *fast, "--artifact", "model_fp32.onnx", block=ALL_RUNTIMES)
    _one_line(proc, "golden.npz", "gives no sha256")


def test_modified_golden_is_refused(bundle: Path, cli, fast) -> None:
    with np.load(bundle / "golden.npz", allow_pickle=False) as npz:
        golden = {k: npz[k] for k in npz.files}
    golden["logits"] = golden["logits"] + 1.0  # references that every artifact would "fail"
    np.savez(bundle / "golden.npz", **golden)
    proc = cli(bundle, *fast, "--artifact", "model_fp32.onnx", block=ALL_RUNTIMES)
    _one_line(proc, "golden.npz", "sha256 does not match")


def test_golden_sha256_is_the_files(bundle: Path, manifest_of) -> None:
    digest = hashlib.sha256((bundle / "golden.npz").read_bytes()).hexdigest()
    assert manifest_of(bundle)["golden"]["sha256"] == digest


@pytest.mark.parametrize("entry, where", [
    ("../../etc/passwd", "artifact"), ("/etc/passwd", "artifact"), ("sub/../../x", "artifact"),
    ("outside_link", "artifact"), ("/etc/passwd", "golden"), ("outside_link", "golden"),
])
def test_paths_that_leave_the_bundle_are_refused_before_any_file_is_opened(bundle: Path, cli, fast, tmp_path,
                                                                           entry, where) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    (bundle / "outside_link").symlink_to(secret)

    def point(manifest: dict) -> None:
        target = manifest["golden"] if where == "golden" else manifest["artifacts"][-1]  # the LAST artifact
        target["file"] = entry

    _edit(bundle, point)
    proc = cli(bundle, *fast)  # the whole bundle: nothing may run before the refusal
    line = _one_line(proc, repr(entry), "outside the bundle" if entry == "outside_link" else "leaves the bundle")
    assert "edgekit-runner:" in line and proc.stdout == ""


def test_bundle_member_accepts_plain_names(er: ModuleType, bundle: Path) -> None:
    assert er.bundle_member(bundle, "model_fp32.tflite") == (bundle / "model_fp32.tflite").resolve()
    assert er.bundle_member(bundle, "reports/model_fp32.tflite.json").parent.name == "reports"
    for bad in ("", ".", "a\\..\\..\\b", None, 3):
        with pytest.raises(er.RunnerError) as info:
            er.bundle_member(bundle, bad)
        assert info.value.code == er.EXIT_INTEGRITY
