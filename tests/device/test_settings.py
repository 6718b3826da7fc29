"""RunnerSettings: the one typed object from the CLI to the runner, and its argv."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.device.settings import DEFAULTS, EMULATED, RUN_TIMEOUT_S, RunnerSettings
from edgekit.runner.edgekit_runner import parse_args


def test_defaults_are_the_runners_own() -> None:
    """A bare runner invocation and the default settings measure the same thing."""
    bare = parse_args(["BUNDLE"])
    assert (DEFAULTS.threads, DEFAULTS.runs, DEFAULTS.warmup, DEFAULTS.min_seconds, DEFAULTS.max_seconds, DEFAULTS.artifact) == (
        bare.threads, bare.runs, bare.warmup, bare.min_seconds, bare.max_seconds, bare.artifact)
    assert DEFAULTS.timeout == RUN_TIMEOUT_S == 1800.0


def test_argv_is_what_the_runner_parses() -> None:
    settings = RunnerSettings(threads=2, runs=7, warmup=0, min_seconds=0.5, max_seconds=9.0, artifact="m.tflite",
                              delegate="xnnpack")
    argv = settings.argv("/tmp/r.json")
    assert argv == ["--artifact", "m.tflite", "--threads", "2", "--runs", "7", "--warmup", "0", "--min-seconds", "0.5",
                    "--max-seconds", "9.0", "--delegate", "xnnpack", "--json", "/tmp/r.json"]
    parsed = parse_args(["BUNDLE", *argv])
    assert (parsed.threads, parsed.runs, parsed.warmup, parsed.min_seconds, parsed.max_seconds, parsed.artifact,
            parsed.delegate, parsed.provider, parsed.json_out) == (2, 7, 0, 0.5, 9.0, "m.tflite", "xnnpack", None, "/tmp/r.json")
    assert "--timeout" not in argv  # the transport's bound, not the runner's


def test_llm_settings_are_what_the_runner_parses() -> None:
    argv = RunnerSettings(prompt_ids=(1, 22, 333), max_new_tokens=4).argv("r.json")
    parsed = parse_args(["BUNDLE", *argv])
    assert (parsed.prompt_ids, parsed.max_new_tokens, parsed.prompt) == ([1, 22, 333], 4, None)
    parsed = parse_args(["BUNDLE", *RunnerSettings(prompt="-x: a prompt that starts with a dash").argv("r.json")])
    assert parsed.prompt == "-x: a prompt that starts with a dash" and parsed.prompt_ids is None


def test_unset_fields_are_left_to_the_runner() -> None:
    assert DEFAULTS.argv("r.json") == ["--runs", "50", "--warmup", "5", "--min-seconds", "1.0", "--max-seconds", "60.0",
                                       "--json", "r.json"]


def test_emulation_shrinks_only_the_timing_left_at_defaults() -> None:
    assert DEFAULTS.for_emulation() == EMULATED
    mine = RunnerSettings(runs=9, threads=1).for_emulation()
    assert (mine.runs, mine.warmup, mine.min_seconds, mine.threads) == (9, EMULATED.warmup, EMULATED.min_seconds, 1)


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULTS.runs = 3  # type: ignore[misc]


def test_cli_threads_reach_the_runtime(tiny_rpi4_bundle: Path, tmp_path: Path) -> None:
    """`edgekit bench BUNDLE --threads 2`: the runner's report says the runtime ran with 2 threads
    (the rpi4 bundle's own default is 4)."""
    manifest = json.loads((tiny_rpi4_bundle / "manifest.json").read_text())
    assert {d.get("threads") for d in manifest["runtime_defaults"].values()} == {4}
    result = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(tiny_rpi4_bundle), "--threads", "2", "--runs", "2",
                             "--warmup", "0", "--min-seconds", "0", "--json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (report,) = json.loads(result.stdout)
    assert report["host"] == "local" and report["passed"] is True
    assert {r["file"] for r in report["results"]} == {a["file"] for a in manifest["artifacts"]}
    assert [r["runtime"]["threads"] for r in report["results"]] == [2] * len(manifest["artifacts"])
    assert all(r["runs"] == 2 for r in report["results"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
