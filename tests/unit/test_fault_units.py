"""Small fault regressions that need no server: SSRF through embedded IPv4, URL redaction, image bombs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.alerts.policy import PolicyError, UrlPolicy, redact_url
from services.scorer.media import MediaError, MediaPolicy, load_image


@pytest.mark.parametrize("url", ["http://[2002:a00:1::]/hook", "http://[::ffff:10.0.0.1]/", "http://[64:ff9b::a00:1]/",
                                 "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "http://[2002:7f00:1::]/"])
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
