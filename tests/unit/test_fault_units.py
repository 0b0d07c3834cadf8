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
    assert "| scorer kill -9 | 10 | 10 | 0 | 0 | 1 | 2.5 | yes | 5 / 5 | 2 / 2 (0) | x |" in doc
