"""The summary text of ``edgekit search``."""

from __future__ import annotations

from edgekit.search.report import race_text


def test_a_race_prints_enough_digits_to_show_which_side_won():
    race = {"trial": 1, "trial_ms": 0.009433, "default_ms": 0.009371, "runs": 200, "where": "build host (amx_int8)"}
    text = race_text(race)
    assert "trial 1 0.00943 ms vs default 0.00937 ms (1.007x;" in text and text.endswith("slower: passed over")
    assert race_text({**race, "trial_ms": 0.0051}).endswith("(0.544x; 200 runs each, build host (amx_int8)): kept")
