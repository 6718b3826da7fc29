"""edgekit search on a tiny CNN: the study resumes, a failing trial is recorded, chosen.toml
rebuilds the chosen bundle byte for byte, and the report is one self-contained file."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgekit.budget import MaxDrop
from edgekit.errors import UnsupportedError
from edgekit.search import SearchOptions, parse_budget
from edgekit.search.result import artifact_hashes
from tests.search.conftest import study_rows


def test_resume_continues_the_study_without_redoing_trials(searched):
    rows = study_rows(searched["out"] / "study.db")
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == searched["first_db"]  # same trials, same completion times: not run again
    assert len(searched["first"]["trials"]) == 2 and len(searched["second"]["trials"]) == 4
    assert sum(line.startswith("[search] ") and "trials done" in line for line in searched["lines"]) == 4
    assert "4/4 trials done" in [line for line in searched["lines"] if "trials done" in line][-1]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(searched):
    trials = searched["second"]["trials"]
    assert trials[0]["state"] == "FAIL"
    assert "this build fails on purpose" in trials[0]["error"]
    assert (searched["out"] / "trials" / "0000" / "error.txt").is_file()
    assert [t["state"] for t in trials[1:]] == ["COMPLETE"] * 3
    assert all(t["bytes"] > 0 and t["latency_ms"] > 0 and 0 <= t["quality"] <= 1 for t in trials[1:])


def test_chosen_toml_rebuilds_the_chosen_bundle_byte_for_byte(searched, tmp_path):
    from edgekit.cli import main

    chosen = searched["second"]["chosen"]
    assert chosen is not None and chosen["heldout"]["dataset"] == "digits:eval[heldout]"
    assert chosen["search"]["drop_pp"] <= 0.5
    out = tmp_path / "rebuilt"
    result = CliRunner().invoke(main, ["build", searched["model"], "--target", searched["target"], "--overlay", chosen["file"],
                                       "--out", str(out), "--latency-runs", "0", "--verify-on", "none"])
    assert result.exit_code == 0, result.output
    expected = artifact_hashes(searched["out"] / "chosen")
    assert expected and artifact_hashes(out) == expected


def test_report_is_self_contained_with_the_pareto_plot(searched):
    page = (searched["out"] / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 2 and "Pareto front" in page
    assert all(f"<td>{n}</td>" in page for n in range(4))
    for name in ("pareto_size.png", "pareto_latency.png"):
        assert (searched["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_new_search_refuses_an_existing_study(searched):
    with pytest.raises(UnsupportedError, match="already holds a search"):
        from edgekit.search import search

        search(SearchOptions(target=searched["target"], model=searched["model"], out=searched["out"], trials=1))


def test_options_are_checked_before_any_work():
    assert parse_budget("30m") == 1800 and parse_budget("90s") == 90 and parse_budget("2") == 2
    with pytest.raises(UnsupportedError, match="--budget"):
        parse_budget("soon")
    with pytest.raises(UnsupportedError, match="top-1"):
        SearchOptions(target="rpi4", max_drop=MaxDrop.parse("cos:0.99"))
    with pytest.raises(UnsupportedError, match=">= 1"):
        SearchOptions(target="rpi4", trials=0)


@pytest.mark.parametrize("args, message", [(["--budget", "soon"], "cannot read --budget 'soon'"),
                                           (["--max-drop", "cos:0.99"], "search judges classifiers by top-1 only"),
                                           (["--trials", "0"], "must be >= 1")])
def test_the_cli_refuses_bad_options_in_one_line(args, message, tmp_path):
    from edgekit.cli import main

    result = CliRunner().invoke(main, ["search", "--target", "rpi4", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("edgekit: error: ") and message in result.output
    assert not (tmp_path / "s").exists()  # refused before any work
