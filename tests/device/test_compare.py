"""edgekit compare: real runner reports (two local bench runs) side by side, as table and PNG."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from edgekit.device.bench import bench
from edgekit.device.compare import EMULATED_NOTE, compare, plot, render_compare
from edgekit.device.settings import RunnerSettings
from edgekit.errors import BenchError

FAST = RunnerSettings(runs=20, min_seconds=0.1, warmup=2)


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny_rpi4_bundle) -> list[Path]:
    """Two real runner JSONs of the whole bundle: one thread, then two threads."""
    bundle = tiny_rpi4_bundle
    folder = tmp_path_factory.mktemp("compare")
    paths = []
    for threads in (1, 2):
        (report,) = bench(bundle, FAST.replace(threads=threads))
        path = folder / f"threads{threads}.json"
        path.write_text(json.dumps(report))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def artifacts(reports) -> list[str]:
    return [r["file"] for r in load(reports[0])["results"]]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_rows_and_ratios_to_the_first_row(reports, artifacts):
    data = compare(reports)
    raw = [r for path in reports for r in load(path)["results"]]
    assert [(row["source"], row["artifact"]) for row in data["rows"]] == [
        (p.name, a) for p in reports for a in artifacts]
    base = raw[0]
    for row, r in zip(data["rows"], raw):
        assert row["p50_ms"] == r["latency_ms"]["p50"] and row["peak_rss_mb"] == r["memory_mb"]["peak_rss"]
        assert row["p50_ratio"] == pytest.approx(r["latency_ms"]["p50"] / base["latency_ms"]["p50"])
        assert row["rss_ratio"] == pytest.approx(r["memory_mb"]["peak_rss"] / base["memory_mb"]["peak_rss"])
        assert row["passed"] is True and row["threads"] == (1 if row["source"] == "threads1.json" else 2)
    device = load(reports[0])["device"]
    assert {row["device"] for row in data["rows"]} == {f"{device['machine']} {device['cpu_model']}"}
    assert data["rows"][0]["p50_ratio"] == 1.0 and data["baseline"]["artifact"] == artifacts[0]

    lines = render_compare(data).splitlines()
    assert lines[0].split()[:3] == ["source", "artifact", "device"]
    body = lines[2:2 + len(raw)]
    for line, row in zip(body, data["rows"]):
        assert line.startswith(row["source"]) and row["artifact"] in line and "PASS" in line
        assert line.split()[-2:] == [f"{row['p50_ratio']:.2f}x", f"{row['rss_ratio']:.2f}x"]
    assert lines[-1] == f"ratios relative to threads1.json {artifacts[0]} ({data['rows'][0]['device']})"


def test_per_artifact_ratios_and_a_bench_list(reports, artifacts, tmp_path):
    """A bench output (list of reports) is flattened; a doubled copy gives exact 2x / 1.5x ratios."""
    first = load(reports[0])
    slower = copy.deepcopy(first)
    slower["host"] = "pi@board"
    for r in slower["results"]:
        r["latency_ms"]["p50"] *= 2
        r["memory_mb"]["peak_rss"] *= 1.5
    bench_out = tmp_path / "bench.json"
    bench_out.write_text(json.dumps([dict(first, host="local"), slower]))
    data = compare([bench_out], per_artifact=True)
    n = len(artifacts)
    assert [row["source"] for row in data["rows"]] == ["bench.json[local]"] * n + ["bench.json[pi@board]"] * n
    assert [row["p50_ratio"] for row in data["rows"]] == pytest.approx([1] * n + [2] * n)
    assert [row["rss_ratio"] for row in data["rows"]] == pytest.approx([1] * n + [1.5] * n)
    assert data["rows"][n]["device"].startswith("pi@board (")
    assert "ratios relative to the same artifact in bench.json[local]" in render_compare(data)


def test_plot_writes_a_real_png(reports, tmp_path):
    out = tmp_path / "plots" / "compare.png"
    plot(compare(reports), out)
    assert out.stat().st_size > 10 * 1024
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 500)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 20  # drawn boxes, points, text: not one flat colour


def test_emulated_results_are_marked(reports, tmp_path):
    report = load(reports[0])
    for r in report["results"]:
        r["emulated"] = True
    path = tmp_path / "emulated.json"
    path.write_text(json.dumps(report))
    data = compare([reports[1], path])
    assert data["emulated"] is True
    assert render_compare(data).splitlines()[-1] == f"* {EMULATED_NOTE}"
    plot(data, tmp_path / "emulated.png")
    assert (tmp_path / "emulated.png").stat().st_size > 10 * 1024


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ("not json", "is not JSON"),
    ('{"device": {}}', "is not a runner report"),
    ("[]", "is not a runner report"),
])
def test_bad_input_files(tmp_path, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BenchError, match=message) as info:
        compare([path])
    assert "--json" in str(info.value)
