"""The alert-quality page's frontier section is computed from the sweep it is given."""

from __future__ import annotations

from services.alerts.quality import plot_sweep, render_markdown


def _res(sweep: list[dict]) -> dict:
    return {
        "posts": 10,
        "span_days": 7.0,
        "brand_weeks": 6.0,
        "incident_rule": "r",
        "incidents": [],
        "dispatcher": {"group_wait_s": 30, "repeat_interval_s": 14400},
        "rule_sets": [],
        "sweep": sweep,
    }


def _row(family: str, first: int, false: float) -> dict:
    return {
        "family": family,
        "rule": {"kind": "surge", "factor": 3.0},
        "first": first,
        "incidents": 20,
        "false_per_brand_week": false,
        "american_through_19": True,
    }


def test_the_frontier_sentence_reads_the_sweep(tmp_path) -> None:
    sweep = [_row("a", 20, 2.95), _row("a", 14, 1.0), _row("b", 12, 0.5), _row("b", 20, 3.5)]
    md = render_markdown(_res(sweep))
    assert "No rule reaches the goal corner" in md
    assert "alerts every incident in its first window: 2.95 per brand-week" in md
    assert "<= 1 false episode per brand-week: 14/20" in md
    assert md.count("| a | factor=3.0 |") == 2 and md.count("| b | factor=3.0 |") == 2
    md = render_markdown(_res([*sweep, _row("c", 20, 0.9)]))
    assert "A rule reaches the goal corner" in md
    plot_sweep(sweep, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
