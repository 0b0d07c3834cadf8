"""Pure parts of the live clients: HTML to text, SSE framing, record mapping edge cases, backoff."""

from __future__ import annotations

import json
import random

import pytest

from pipelines.schemas import Post
from services.ingest.events import BadRecord
from services.ingest.jetstream import (
    JetstreamClient,
    JetstreamConfig,
    at_uri_to_post_id,
    build_url,
    collection_wanted,
    post_from_commit,
)
from services.ingest.live_common import Backoff, BackoffConfig, KeywordFilter, lang_allowed
from services.ingest.mastodon import (
    MastodonClient,
    MastodonConfig,
    SSEEvent,
    SSEParser,
    html_to_text,
    stream_request,
    timeline_request,
)

DID = "did:plc:7kq3vzr2mfx5tnbwhyd4lsoa"


def _post_event(record: dict, op: str = "create", cid: str = "bafyreiabc") -> dict:
    return {
        "did": DID,
        "time_us": 1733407391000200,
        "kind": "commit",
        "commit": {
            "rev": "3lcjq2wfzta2k",
            "operation": op,
            "collection": "app.bsky.feed.post",
            "rkey": "3lcjq2wfzta2k",
            "record": record,
            "cid": cid,
        },
    }


def test_html_to_text_keeps_structure_and_decodes_entities() -> None:
    html = (
        "<p>Hello &lt;world&gt; &#39;quoted&#39;</p><blockquote><p>cited</p></blockquote>"
        "<ul><li>one</li><li>two</li></ul><p>a<br>b<br/>c</p>"
    )
    assert html_to_text(html) == "Hello <world> 'quoted'\n\ncited\n\none\ntwo\n\na\nb\nc"
    assert html_to_text("") == ""
    assert html_to_text("plain text, no tags") == "plain text, no tags"


def test_sse_parser_follows_the_event_stream_rules() -> None:
    p = SSEParser()
    lines = [":)", "event: update", 'data: {"a":', "data: 1}", "", ":thump", "", "data:x", "id: 7", ""]
    out = [ev for ev in map(p.feed, lines) if ev is not None]
    assert out == [SSEEvent("update", '{"a":\n1}'), SSEEvent("message", "x", "7")]
    assert p.comments == 2


def test_jetstream_url_and_filters() -> None:
    cfg = JetstreamConfig(
        url="ws://h/subscribe",
        wanted_collections=["app.bsky.feed.post", "app.bsky.graph.*"],
        wanted_dids=[DID],
    )
    assert build_url(cfg, 42) == (
        "ws://h/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.%2A"
        f"&wantedDids={DID.replace(':', '%3A')}&cursor=42"
    )
    assert collection_wanted("app.bsky.graph.follow", ["app.bsky.graph.*"])
    assert not collection_wanted("app.bsky.feed.like", ["app.bsky.graph.*", "app.bsky.feed.post"])
    assert at_uri_to_post_id(f"at://{DID}/app.bsky.feed.post/3k") == f"bluesky:{DID}/3k"
    with pytest.raises(ValueError):
        at_uri_to_post_id("https://bsky.app/profile/x/post/3k")


def test_jetstream_legacy_blob_refs_long_text_and_empty_posts() -> None:
    legacy = {
        "$type": "app.bsky.embed.images",
        "images": [{"alt": "", "image": {"cid": "bafkreiold", "mimeType": "image/png"}}],
    }
    post = post_from_commit(
        _post_event({"text": "x" * 12_000, "createdAt": "2024-12-05T14:03:10+01:00", "embed": legacy})
    )
    assert len(post.text) == 10_000 and post.extra["truncated"] is True
    assert post.media[0].uri.endswith(f"/{DID}/bafkreiold@jpeg") and post.media[0].bytes is None
    assert post.created_at.utcoffset().total_seconds() == 0 and post.created_at.hour == 13

    client = JetstreamClient(JetstreamConfig())
    empty = client.handle_frame(json.dumps(_post_event({"text": "  ", "createdAt": "2024-12-05T14:03:10Z"})))
    assert isinstance(empty, BadRecord) and "text or at least one media" in empty.reason
    assert client.handle_frame(b"\xff\xfe") is not None  # undecodable bytes become a BadRecord too


def test_jetstream_updates_are_opt_in() -> None:
    rec = {"text": "edited text", "createdAt": "2024-12-05T14:03:10Z"}
    off = JetstreamClient(JetstreamConfig())
    assert off.handle_frame(json.dumps(_post_event(rec, op="update"))) is None
    on = JetstreamClient(JetstreamConfig(include_updates=True))
    first = on.handle_frame(json.dumps(_post_event(rec, op="update", cid="bafyreiv1")))
    assert isinstance(first, Post) and first.extra["edited"] is True
    assert on.handle_frame(json.dumps(_post_event(rec, op="update", cid="bafyreiv1"))) is None
    assert isinstance(on.handle_frame(json.dumps(_post_event(rec, op="update", cid="bafyreiv2"))), Post)


def test_mastodon_paths_for_each_stream() -> None:
    base = "https://fedi.example"
    assert stream_request(MastodonConfig(base_url=base, only_media=True)) == (
        "/api/v1/streaming/public",
        {"only_media": "true"},
    )
    assert timeline_request(MastodonConfig(base_url=base, stream="public:remote")) == (
        "/api/v1/timelines/public",
        {"remote": "true"},
    )
    cfg = MastodonConfig(base_url=base, stream="hashtag", tag="#café")
    assert stream_request(cfg) == ("/api/v1/streaming/hashtag", {"tag": "café"})
    assert timeline_request(cfg) == ("/api/v1/timelines/tag/caf%C3%A9", {})
    with pytest.raises(ValueError, match="needs a tag"):
        MastodonConfig(base_url=base, stream="hashtag:local")


def test_mastodon_reblogs_edits_and_bad_payloads() -> None:
    status = {
        "id": "200",
        "created_at": "2024-12-05T14:10:02.118Z",
        "content": "<p>hi</p>",
        "account": {"id": "1", "acct": "ana@remote.example", "username": "ana"},
        "edited_at": "2024-12-05T14:11:00Z",
        "media_attachments": [],
    }
    boost = {**status, "id": "201", "content": "", "reblog": status}
    client = MastodonClient(MastodonConfig(base_url="https://fedi.example"))
    assert client.handle_sse(SSEEvent("update", json.dumps(boost))) is None
    assert client.last_id == "201" and client.skipped == {"reblog": 1}
    assert client.handle_sse(SSEEvent("status.update", json.dumps(status))) is None
    assert client.handle_sse(SSEEvent("delete", "200")) is None
    bad = client.handle_sse(SSEEvent("update", '["not", "a", "status"]'))
    assert isinstance(bad, BadRecord) and "not a JSON object" in bad.reason
    naive = client.handle_sse(SSEEvent("update", json.dumps({**status, "id": "202", "created_at": "2024-12-05"})))
    assert isinstance(naive, BadRecord) and naive.position == "202"

    edits = MastodonClient(MastodonConfig(base_url="https://fedi.example", include_edits=True))
    edited = edits.handle_sse(SSEEvent("status.update", json.dumps(status)))
    assert isinstance(edited, Post) and edited.extra["edited"] is True and edits.last_id is None


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(BackoffConfig(initial_s=1, max_s=8, max_reconnects=5), random.Random(1))
    delays = [b.next_delay() for _ in range(5)]
    for d, ceiling in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert ceiling / 2 <= d <= ceiling
    assert b.exhausted
    b.reset()
    assert not b.exhausted and b.failures == 0


def test_keyword_and_language_filters() -> None:
    kw = KeywordFilter(["Café", " "])
    assert kw("Best CAFÉ in town") and not kw("tea")
    assert KeywordFilter([])("anything")
    assert lang_allowed("en-GB", ["en"]) and not lang_allowed(None, ["en"]) and lang_allowed(None, [])
