"""Small fault regressions that need no server: SSRF through embedded IPv4, URL redaction, image bombs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.alerts.policy import PolicyError, UrlPolicy, redact_url
from services.scorer.media import MediaError, MediaPolicy, load_image


@pytest.mark.parametrize(
    "url",
    [
        "http://[2002:a00:1::]/hook",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
        "http://[2002:7f00:1::]/",
    ],
)
def test_ipv6_forms_embedding_a_private_ipv4_are_refused(url: str) -> None:
    with pytest.raises(PolicyError, match="private"):
        UrlPolicy().check(url, resolve=False)


def test_public_ipv6_and_6to4_of_a_public_ipv4_pass() -> None:
    UrlPolicy().check("https://[2002:808:808::]/hook", resolve=False)  # 6to4 of 8.8.8.8
    UrlPolicy().check("https://[2606:4700::1111]/hook", resolve=False)


def test_webhook_urls_are_redacted_to_scheme_and_host() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/secret?x=1") == "https://hooks.slack.com/***"
    assert redact_url("https://example.com:8443/") == "https://example.com:8443/"
    assert redact_url("http://[2606:4700::1]/t") == "http://[2606:4700::1]/***"


def test_an_image_bomb_is_refused_from_its_header(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # ~20 kB on disk, 432 MB as RGB
    path = tmp_path / "bomb.png"
    path.write_bytes(buf.getvalue())
    with pytest.raises(MediaError, match="exceeds the limit"):
        load_image(str(path), MediaPolicy(allowed_roots=(tmp_path,)))


def test_the_fault_run_resamples_past_the_stream_end_with_new_ids_later_in_time() -> None:
    from services.faults.run import resample

    posts = [{"id": f"p{i}", "created_at": f"2015-02-17T0{i}:00:00+00:00"} for i in range(3)]
    out = resample(posts, 7)
    assert [p["id"] for p in out] == ["p0", "p1", "p2", "p0-r1", "p1-r1", "p2-r1", "p0-r2"]
    times = [p["created_at"] for p in out]
    assert times == sorted(times) and len(set(times)) == 7, "copies must come later, in order"


def test_the_fault_table_replaces_only_its_block(tmp_path) -> None:
    from services.faults.run import Outcome, write

    old = "# Reliability\n\nprose\n\n<!-- faults:begin -->\nold\n<!-- faults:end -->\n\nmore\n"
    (tmp_path / "reliability.md").write_text(old)
    write([Outcome("scorer kill -9", 10, 10, 0, 0, 1, 2.5, True, 5, 0, 0, 2, 2, 0, 30.0, "x")], tmp_path)
    doc = (tmp_path / "reliability.md").read_text()
    assert "prose" in doc and "more" in doc and "old" not in doc
    assert "| scorer kill -9 | 10 | 10 | 0 | 0 | 1 | 2.5 | yes | 5 / 5 | 2 / 2 (0) | " in doc and " | x |" in doc


def test_a_rerun_row_joins_the_rows_of_other_machines_each_labelled_and_load_is_plotted(tmp_path) -> None:
    import json

    from services.faults.run import Outcome, machine_label, write

    old = {
        "when": "2026-12-03T14:58:26+00:00",
        "cpu": "Some Other CPU",
        "cores": 2,
        "runs": [asdict_row("scorer kill -9"), asdict_row("100 posts/s for 10 min")],
    }
    (tmp_path / "reliability.json").write_text(json.dumps(old))
    load = Outcome("100 posts/s for 10 min", 60, 60, 0, 0, 0, 0.5, True, 5, 0, 0, 0, 0, 0, 600.0, "y")
    load.samples = [[5.0 * i, 10, 1000.0] for i in range(20)]
    write([load], tmp_path)
    doc = (tmp_path / "reliability.md").read_text()
    runs = json.loads((tmp_path / "reliability.json").read_text())["runs"]
    assert [r["scenario"] for r in runs] == ["scorer kill -9", "100 posts/s for 10 min"]
    assert runs[0]["machine"] == "Some Other CPU, 2 cores" and runs[0]["when"].startswith("2026-12-03")
    assert runs[1]["machine"] == machine_label() and runs[1]["samples"] == load.samples
    assert "Some Other CPU, 2 cores, 2026-12-03" in doc and f"{machine_label()}, " in doc
    assert (tmp_path / "reliability" / "load.png").stat().st_size > 10_000 and "reliability/load.png" in doc


def asdict_row(name: str) -> dict:
    return {
        "scenario": name,
        "posts_in": 3,
        "stored": 3,
        "lost": 0,
        "duplicated": 0,
        "dlq": 0,
        "recovery_s": 1.0,
        "state_consistent": True,
        "windows_checked": 1,
        "window_diffs": 0,
        "notifications": 0,
        "delivered": 0,
        "bad_signatures": 0,
        "seconds": 9.0,
        "note": "",
    }


def test_the_load_row_reports_the_memory_floor_so_a_sawtooth_is_not_a_leak() -> None:
    from services.faults.run import memory_note

    saw = [[t, 0, 1000 + (150 if (t // 5) % 4 else 0)] for t in range(0, 1200, 5)]  # trims every 20 s
    assert "floor 1000 MB (first quarter) -> 1000 MB (last quarter), +0.0 MB/min" in memory_note(saw)
    assert "peak 1150 MB" in memory_note(saw)
    leak = [[t, 0, 1000 + t / 6] for t in range(0, 1200, 5)]  # +10 MB/min
    assert "+10.0 MB/min over the second half" in memory_note(leak)
