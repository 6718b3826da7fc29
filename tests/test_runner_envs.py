"""The tox envs that prove the runner stands alone (numpy + one runtime, no torch/edgekit)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# two Python versions per runtime where wheels exist (tflite-runtime 2.14: cp39-cp311)
ENVS = ["runner-litert-py311", "runner-litert-py312", "runner-tflite-py39", "runner-tflite-py311",
        "runner-ort-py311", "runner-ort-py312"]


@pytest.mark.slow
def test_runner_standalone_tox_envs(tmp_path):
    tox = shutil.which("tox") or str(Path(sys.executable).parent / "tox")
    # pyenv's other interpreters are not on PATH by default; tox looks for python3.X there
    extra = [str(Path(p).parent) for p in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*[0-9]")))]
    env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), *extra])}
    result = subprocess.run([tox, "-e", ",".join(ENVS), "--workdir", str(tmp_path / "tox")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1800)
    summary = [line for line in result.stdout.splitlines() if line.strip().startswith("runner-")]
    assert result.returncode == 0, "\n".join(summary) or result.stdout[-3000:]
    ran = [line for line in summary if ": OK" in line]
    assert len(ran) >= 4, summary  # at least two runtimes x two Pythons really ran
