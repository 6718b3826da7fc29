"""edgekit search on a tiny CNN: killed with SIGKILL mid-trial, resumed on Ray without redoing a
trial, a failing trial recorded, chosen.toml rebuilding the chosen bundle byte for byte, and the
report one self-contained file; options refused in one line before any work."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.errors import UnsupportedError
from edgekit.search import SearchOptions, parse_budget, parse_search_budget
from edgekit.search.result import artifact_hashes
from edgekit.search.study import INTERRUPTED
from tests.search.conftest import study_rows


def _after_kill(searched) -> list[dict]:
    """The trials the resumed search built (not those reusing an earlier trial's figures)."""
    last = max(r[0] for r in searched["at_kill"])
    return [t for t in searched["second"]["trials"] if t["number"] > last and t["duplicate_of"] is None]


def test_resume_after_kill_9_does_not_redo_completed_trials(searched):
    rows = study_rows(searched["out"] / "study.db")
    assert [r[0] for r in rows] == list(range(len(rows)))
    done_before = [r for r in searched["at_kill"] if r[1] == "COMPLETE"]
    assert len(done_before) >= 2 and all(r in rows for r in done_before)  # same rows, same completion times
    assert searched["mtimes"]  # a trial built before the kill (another may have reused its figures: duplicate_of)
    for folder, mtime in searched["mtimes"].items():  # nor rebuilt: their bundles were not written again
        assert (searched["out"] / "trials" / folder / "bundle" / "manifest.json").stat().st_mtime_ns == mtime
    trials = searched["second"]["trials"]
    running = [r[0] for r in searched["at_kill"] if r[1] == "RUNNING"]
    assert [trials[n]["state"] for n in running] == ["FAIL"] and trials[running[0]]["error"] == INTERRUPTED
    total = searched["total"]
    assert sum(t["duplicate_of"] is None and t["state"] in ("COMPLETE", "FAIL") for t in trials) == total
    progress = [line for line in searched["lines"] if line.startswith("[search] ") and "trials done" in line]
    assert f"{total}/{total} trials done" in progress[-1]


def test_ray_trials_run_and_a_failing_one_is_recorded(searched):
    on_ray = _after_kill(searched)
    assert len(on_ray) == 4 and all("local Ray runtime (1 node(s), 2 CPUs)" in t["ran_on"] for t in on_ray)
    failed = [t for t in on_ray if t["state"] == "FAIL"]
    assert len(failed) == 1 and "this build fails on purpose" in failed[0]["error"]
    assert (searched["out"] / "trials" / f"{failed[0]['number']:04d}" / "error.txt").is_file()
    done = [t for t in searched["second"]["trials"] if t["state"] == "COMPLETE"]
    assert len(done) >= 3 and all(t["bytes"] > 0 and t["latency_ms"] > 0 and 0 <= t["quality"] <= 1 for t in done)
    assert searched["second"]["ran_on"].startswith("local Ray runtime")


def test_chosen_toml_rebuilds_the_chosen_bundle_byte_for_byte(searched, tmp_path):
    from edgekit.cli import main

    chosen = searched["second"]["chosen"]
    assert chosen is not None and chosen["heldout"]["dataset"] == "digits:eval[heldout]"
    assert chosen["search"]["figure"] <= 0.5  # top-1 drop in pp on the search half
    assert chosen["identical_to_searched"]  # the shipped artifact is the one the search measured, byte for byte
    default = searched["second"]["default"]
    assert chosen["heldout"]["bytes"] <= default["heldout"]["bytes"]  # never larger than the default's best int8
    for race in searched["second"]["races"]:  # and never slower, timed beside it
        assert race["runs"] == 200 and race["trial_ms"] > 0 and race["default_ms"] > 0
    if chosen["trial"] is not None:
        assert searched["second"]["races"][-1]["trial"] == chosen["trial"]
        assert searched["second"]["races"][-1]["trial_ms"] <= searched["second"]["races"][-1]["default_ms"]
    import tomllib

    from edgekit.search.trial import trial_threads

    # the chosen bundle was built with the thread count of the trial that won (its share of the
    # cores in that run), and chosen.toml says so
    recorded = tomllib.loads(Path(chosen["file"]).read_text())["build"]
    trial = searched["out"] / "trials" / f"{chosen['trial'] or 0:04d}" / "overlay.toml"
    assert recorded == (tomllib.loads(trial.read_text())["build"] if chosen["trial"] is not None else {"threads": trial_threads(2)})
    out = tmp_path / "rebuilt"
    result = CliRunner().invoke(main, ["build", searched["model"], "--target", searched["target"], "--recipe", chosen["file"],
                                       "--out", str(out), "--latency-runs", "0", "--verify-on", "none"])
    assert result.exit_code == 0, result.output
    expected = artifact_hashes(searched["out"] / "chosen")
    assert expected and artifact_hashes(out) == expected


def test_report_is_self_contained_with_the_pareto_plot(searched):
    page = (searched["out"] / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3 and "Pareto front" in page and "per-layer int8 sensitivity" in page
    assert all(f"<td>{t['number']}</td>" in page for t in searched["second"]["trials"])
    for name in ("pareto_size.png", "pareto_latency.png", "sensitivity.png"):
        assert (searched["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_float_layers_come_from_the_sensitivity_analysis(searched):
    import json

    layers = searched["second"]["default"]["search"]["sensitivity"]["layers"]
    assert [r["op"] for r in layers if r["op"] == "Conv"] == ["Conv", "Conv"] and len(layers) == 3
    assert layers == sorted(layers, key=lambda r: -r["loss"]) and all(0 <= r["loss"] < 0.1 for r in layers)
    trials = [t for t in searched["second"]["trials"] if t["state"] == "COMPLETE" and t["duplicate_of"] is None]
    assert all("float_layers" in t["params"] for t in trials)
    for t in trials:  # a trial keeping k layers in float kept the k most sensitive ones
        manifest = json.loads((searched["out"] / "trials" / f"{t['number']:04d}" / "bundle" / "manifest.json").read_text())
        scheme = next(a for a in manifest["artifacts"] if a["file"] == t["artifact"])["quantization"]
        assert scheme.get("float_nodes", []) == [r["node"] for r in layers[:t["params"]["float_layers"]]]


def test_a_new_search_refuses_an_existing_study(searched):
    with pytest.raises(UnsupportedError, match="already holds a search"):
        from edgekit.search import search

        search(SearchOptions(target=searched["target"], model=searched["model"], out=searched["out"], trials=1))


def test_budgets_are_read_once_and_checked_before_any_work():
    assert parse_budget("30m") == 1800 and parse_budget("90s") == 90 and parse_budget("2") == 2
    with pytest.raises(UnsupportedError, match="--budget"):
        parse_budget("soon")
    assert str(parse_search_budget()) == "0.5pp" and str(parse_search_budget(max_drop="1pp")) == "1pp"
    assert str(parse_search_budget(min_cosine=0.998)) == "cos:0.998"
    assert str(parse_search_budget(max_ppl_increase="5%")) == "ppl:5%"
    with pytest.raises(UnsupportedError, match="both bound the quality"):
        parse_search_budget(max_drop="1pp", min_cosine=0.99)
    with pytest.raises(UnsupportedError, match=">= 1"):
        SearchOptions(target="rpi4", trials=0)


@pytest.mark.parametrize("args, message", [(["--budget", "soon"], "cannot read --budget 'soon'"),
                                           (["--max-drop", "1pp", "--min-cosine", "0.99"], "both bound the quality"),
                                           (["--min-cosine", "1.5"], "out of range"),
                                           (["--host", "user@"], "user@"),
                                           (["--trials", "0"], "must be >= 1")])
def test_the_cli_refuses_bad_options_in_one_line(args, message, tmp_path):
    from edgekit.cli import main

    result = CliRunner().invoke(main, ["search", "--target", "rpi4", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("edgekit: error: ") and message in result.output
    assert not (tmp_path / "s").exists()  # refused before any work


def test_a_budget_for_another_metric_is_refused_after_the_default_build(search_setup, tmp_path):
    from edgekit.search import search

    options = SearchOptions(target=search_setup["target"], model=search_setup["model"], trials=1, out=tmp_path / "s",
                            max_drop=parse_search_budget(min_cosine=0.99), latency_runs=1)
    with pytest.raises(UnsupportedError, match="this model's quality is top1"):
        search(options)
    assert not (tmp_path / "s" / "trials").exists()  # no trial was built


def test_when_no_trial_wins_the_profile_as_it_is_is_chosen(searched, tmp_path):
    from edgekit.search.result import finish
    from tests.search.conftest import search_options

    out = tmp_path / "search"
    out.mkdir()
    options = search_options({**searched, "out": out}, 1, False)
    default = searched["second"]["default"]["search"]
    chosen = finish(options, None, default)
    assert chosen["trial"] is None and "the profile as it is" in (out / "chosen.toml").read_text()
    assert chosen["heldout"]["artifact"] == default["artifact"] and chosen["identical_to_searched"]
    assert chosen["heldout"]["sha256"] == default["sha256"] and chosen["search"]["bytes"] == default["bytes"]
