"""Live platform clients against local servers that speak the real protocols.

A websockets server plays Jetstream (filters, `cursor` replay from its event log, a network
drop mid-stream); a raw asyncio HTTP/1.1 server plays a Mastodon instance (chunked SSE with
heartbeats, a separate streaming host announced by /api/v2/instance, REST timelines with
since_id/max_id paging, bearer auth). Payload shapes follow the protocol documentation;
the contents are made up. Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from pipelines.schemas import Post
from services.ingest.events import BadRecord, ConnectorError, ConnectorEvent
from services.ingest.jetstream import JetstreamClient, JetstreamConfig, stream_jetstream
from services.ingest.live_common import BackoffConfig
from services.ingest.mastodon import MastodonClient, MastodonConfig, stream_mastodon

pytestmark = pytest.mark.timeout(60)

FAST = BackoffConfig(initial_s=0.02, max_s=0.1, max_reconnects=5)


def run(coro: Awaitable[Any], timeout: float = 15.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(
    events: Any, stop: asyncio.Event, until: Callable[[list[ConnectorEvent]], bool]
) -> list[ConnectorEvent]:
    """Drain a connector until `until(items)` holds, then set stop and let the generator end by itself."""
    items: list[ConnectorEvent] = []
    async with contextlib.aclosing(events) as it:
        async for item in it:
            items.append(item)
            if until(items):
                stop.set()
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ================================================================================================
# Jetstream
# ================================================================================================

T0 = 1733407391_000000  # 2024-12-05T14:03:11Z in unix microseconds
ALICE = "did:plc:7kq3vzr2mfx5tnbwhyd4lsoa"
BRUNO = "did:plc:ub2x6gk4wqja7hzrmvc3tdpe"
CARLA = "did:plc:h5nwz3yrkqe7uvt2bmalx6fo"
DIEGO = "did:web:diego.example.com"


def _commit(
    did: str,
    t: int,
    rkey: str,
    record: dict[str, Any] | None,
    op: str = "create",
    collection: str = "app.bsky.feed.post",
    cid: str | None = None,
) -> dict[str, Any]:
    commit: dict[str, Any] = {
        "rev": "3ld" + rkey[3:],
        "operation": op,
        "collection": collection,
        "rkey": rkey,
    }
    if record is not None:
        commit["record"] = record
        commit["cid"] = cid or f"bafyreib{rkey}q4zx7a2mfn5kwe3yhuvt6gclr"
    return {"did": did, "time_us": t, "kind": "commit", "commit": commit}


def _blob(cid: str, mime: str, size: int) -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}


def _ref(did: str, rkey: str) -> dict[str, str]:
    return {"uri": f"at://{did}/app.bsky.feed.post/{rkey}", "cid": f"bafyreib{rkey}q4zx7a2mfn5kwe3yhuvt6gclr"}


IMG1 = "bafkreiaq3mxv7yl2ncwbr5ztd4ugk6ohej2fsp3yqia7lmtxwz4rvbn6du"
IMG2 = "bafkreihf6zp2wn3qyxgmv4c7dlsbt5aeuo2kri6jzw3nymvqhxg7tla5ke"
VID1 = "bafkreicw5rl2zqxe7mhv4tnpk3oyaj6bdgu2sf7lwx5iqmcnzrte4yvh3a"

# Phase 1: what the server sends on the first connection (then the network drops).
J_IDENTITY = {
    "did": ALICE,
    "time_us": T0 + 100,
    "kind": "identity",
    "identity": {
        "did": ALICE,
        "handle": "maplecove.bsky.social",
        "seq": 4021775301,
        "time": "2024-12-05T14:03:11.000Z",
    },
}
J_POST_IMAGES = _commit(
    ALICE,
    T0 + 200,
    "3lcjq2wfzta2k",
    {
        "$type": "app.bsky.feed.post",
        "text": "Morning coffee at the harbour, finally some sun ☀️",
        "createdAt": "2024-12-05T14:03:10.812Z",
        "langs": ["en"],
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": "A paper cup of flat white on a wooden pier",
                    "image": _blob(IMG1, "image/jpeg", 412377),
                    "aspectRatio": {"width": 1600, "height": 1200},
                },
                {
                    "alt": "",
                    "image": _blob(IMG2, "image/png", 95112),
                    "aspectRatio": {"width": 800, "height": 800},
                },
            ],
        },
    },
)
J_LIKE = _commit(
    BRUNO,
    T0 + 250,
    "3lcjq2xkbrd2p",
    {
        "$type": "app.bsky.feed.like",
        "createdAt": "2024-12-05T14:03:11.101Z",
        "subject": _ref(ALICE, "3lcjq2wfzta2k"),
    },
    collection="app.bsky.feed.like",
)
J_REPLY = _commit(
    BRUNO,
    T0 + 400,
    "3lcjq32mnok2y",
    {
        "$type": "app.bsky.feed.post",
        "text": "Same here, the espresso place on 5th reopened!",
        "createdAt": "2024-12-05T14:03:11.250Z",
        "langs": ["en", "es"],
        "reply": {"root": _ref(ALICE, "3lcjq2wfzta2k"), "parent": _ref(ALICE, "3lcjq2wfzta2k")},
    },
)
J_DELETE = _commit(BRUNO, T0 + 500, "3lcinv7hwbs2c", None, op="delete")
J_MALFORMED_TIME = T0 + 600
J_MALFORMED = (
    '{"did":"'
    + CARLA
    + '","time_us":'
    + str(J_MALFORMED_TIME)
    + ',"kind":"commit","commit":{"rev":"3lcjq3b5kz22c","operation":"cre'
)  # cut short
J_ACCOUNT = {
    "did": CARLA,
    "time_us": T0 + 700,
    "kind": "account",
    "account": {
        "active": False,
        "did": CARLA,
        "seq": 4021775399,
        "status": "deactivated",
        "time": "2024-12-05T14:03:11.700Z",
    },
}
J_NAIVE_TIME = _commit(
    CARLA,
    T0 + 800,
    "3lcjq3bq5ax2e",
    {
        "$type": "app.bsky.feed.post",
        "text": "no timezone on this one",
        "createdAt": "2024-12-05T14:03:11",
        "langs": ["en"],
    },
)
# Phase 2: posted while the client was away, then live.
J_VIDEO_QUOTE = _commit(
    ALICE,
    T0 + 900,
    "3lcjq3h7ty22w",
    {
        "$type": "app.bsky.feed.post",
        "text": "Look at these waves. Worth the cold coffee.",
        "createdAt": "2024-12-05T14:03:11.880Z",
        "langs": ["en"],
        "embed": {
            "$type": "app.bsky.embed.recordWithMedia",
            "record": {"$type": "app.bsky.embed.record", "record": _ref(BRUNO, "3lcjq32mnok2y")},
            "media": {
                "$type": "app.bsky.embed.video",
                "video": _blob(VID1, "video/mp4", 5022310),
                "alt": "Waves breaking on the pier",
                "aspectRatio": {"width": 1080, "height": 1920},
            },
        },
    },
)
J_DEEP_REPLY = _commit(
    DIEGO,
    T0 + 1000,
    "3lcjq3mzd5k2a",
    {
        "$type": "app.bsky.feed.post",
        "text": "Que café horrível hoje, sinceramente.",
        "createdAt": "2024-12-05T14:03:12.010Z",
        "langs": ["pt-BR"],
        "reply": {"root": _ref(ALICE, "3lcjq2wfzta2k"), "parent": _ref(BRUNO, "3lcjq32mnok2y")},
    },
)
J_LIVE = _commit(
    BRUNO,
    T0 + 4_000_000,
    "3lcjq4a2vqs2n",
    {
        "$type": "app.bsky.feed.post",
        "text": "COFFEE prices are up again. Not thrilled.",
        "createdAt": "2024-12-05T14:03:15.000Z",
        "langs": ["en"],
    },
)

PHASE1: list[tuple[int, str]] = (
    [(e["time_us"], json.dumps(e)) for e in (J_IDENTITY, J_POST_IMAGES, J_LIKE, J_REPLY, J_DELETE)]
    + [(J_MALFORMED_TIME, J_MALFORMED)]
    + [(e["time_us"], json.dumps(e)) for e in (J_ACCOUNT, J_NAIVE_TIME)]
)
PHASE2: list[tuple[int, str]] = [(e["time_us"], json.dumps(e)) for e in (J_VIDEO_QUOTE, J_DEEP_REPLY)]


def _collection_of(frame: str) -> str | None:
    try:
        ev = json.loads(frame)
    except json.JSONDecodeError:
        return "app.bsky.feed.post"  # the real server filters before serialising; keep the broken one
    return ev.get("commit", {}).get("collection") if ev.get("kind") == "commit" else None


class FakeJetstream:
    """Jetstream's subscribe endpoint: honours wantedCollections, replays its log from `cursor`."""

    def __init__(self, drop_after_phase1: bool = True) -> None:
        self.paths: list[str] = []
        self.log: list[tuple[int, str]] = list(PHASE1)
        self.client_caught_up = asyncio.Event()
        self.drop_after_phase1 = drop_after_phase1
        self.port = 0

    def _wanted(self, query: dict[str, list[str]], frame: str) -> bool:
        coll = _collection_of(frame)
        wanted = query.get("wantedCollections", [])
        return coll is None or not wanted or coll in wanted

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        query = parse_qs(urlsplit(ws.request.path).query)
        if len(self.paths) == 1 and self.drop_after_phase1:
            for _, frame in self.log:
                if self._wanted(query, frame):
                    await ws.send(frame)
            await self.client_caught_up.wait()
            ws.transport.abort()  # a network drop: no close frame
            self.log.extend(PHASE2)  # posted while the client is away
            return
        if len(self.paths) == 1:
            self.log.extend(PHASE2)
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        for t, frame in self.log:
            if cursor is not None and t >= cursor and self._wanted(query, frame):
                await ws.send(frame)
        if cursor is None:  # live tail from "now": this fake sends its whole log as if live
            for _, frame in self.log:
                if self._wanted(query, frame):
                    await ws.send(frame)
        await ws.send(json.dumps(J_LIVE))
        await ws.wait_closed()


def _by_id(items: list[ConnectorEvent]) -> dict[str, Post]:
    return {i.id: i for i in items if isinstance(i, Post)}


def test_jetstream_reconnects_with_rewound_cursor_and_delivers_each_post_once() -> None:
    async def main() -> tuple[list[ConnectorEvent], FakeJetstream, JetstreamClient]:
        fake = FakeJetstream()
        async with serve(fake.handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            stop = asyncio.Event()
            cfg = JetstreamConfig(url=f"ws://127.0.0.1:{port}/subscribe", stop=stop, backoff=FAST)
            client = JetstreamClient(cfg)

            def until(items: list[ConnectorEvent]) -> bool:
                if any(isinstance(i, BadRecord) and "timezone" in i.reason for i in items):
                    fake.client_caught_up.set()  # the last phase-1 frame is in: drop the link now
                return any(isinstance(i, Post) and i.id.endswith("3lcjq4a2vqs2n") for i in items)

            items = await collect(client.events(), stop, until)
        return items, fake, client

    items, fake, client = run(main())

    # Two connections; the second resumes 3 s before the last time_us seen (the naive-time post).
    assert len(fake.paths) == 2
    first, second = (parse_qs(urlsplit(p).query) for p in fake.paths)
    assert urlsplit(fake.paths[0]).path == "/subscribe"
    assert first == {"wantedCollections": ["app.bsky.feed.post"]}
    assert second["wantedCollections"] == ["app.bsky.feed.post"]
    assert second["cursor"] == [str(J_NAIVE_TIME["time_us"] - 3_000_000)]
    assert client.connects == 2

    # Exactly these, in this order; the replayed overlap (posts and bad frames) comes out once.
    kinds = [(type(i).__name__, i.id if isinstance(i, Post) else i.reason.split(":")[0]) for i in items]
    assert kinds == [
        ("Post", f"bluesky:{ALICE}/3lcjq2wfzta2k"),
        ("Post", f"bluesky:{BRUNO}/3lcjq32mnok2y"),
        ("BadRecord", "invalid JSON"),
        ("BadRecord", "schema"),
        ("Post", f"bluesky:{ALICE}/3lcjq3h7ty22w"),
        ("Post", f"bluesky:{DIEGO}/3lcjq3mzd5k2a"),
        ("Post", f"bluesky:{BRUNO}/3lcjq4a2vqs2n"),
    ]
    posts = _by_id(items)

    img = posts[f"bluesky:{ALICE}/3lcjq2wfzta2k"]
    assert img.platform == "bluesky"
    assert img.author.id == f"bluesky:{ALICE}"
    assert img.author.handle == "maplecove.bsky.social"  # learned from the identity event
    assert img.text == "Morning coffee at the harbour, finally some sun ☀️"
    assert img.lang == "en"
    assert img.created_at == datetime(2024, 12, 5, 14, 3, 10, 812000, tzinfo=UTC)
    assert img.thread_id == img.id and img.reply_to is None
    assert [(m.kind, m.uri, m.bytes, m.mime) for m in img.media] == [
        ("image", f"https://cdn.bsky.app/img/feed_fullsize/plain/{ALICE}/{IMG1}@jpeg", 412377, "image/jpeg"),
        ("image", f"https://cdn.bsky.app/img/feed_fullsize/plain/{ALICE}/{IMG2}@jpeg", 95112, "image/jpeg"),
    ]
    assert img.extra["uri"] == f"at://{ALICE}/app.bsky.feed.post/3lcjq2wfzta2k"
    assert img.extra["time_us"] == J_POST_IMAGES["time_us"]
    assert img.extra["alt_text"] == "A paper cup of flat white on a wooden pier"

    reply = posts[f"bluesky:{BRUNO}/3lcjq32mnok2y"]
    assert reply.thread_id == img.id and reply.reply_to == img.id
    assert reply.lang == "en" and reply.author.handle is None and reply.media == []

    video = posts[f"bluesky:{ALICE}/3lcjq3h7ty22w"]
    assert [(m.kind, m.uri, m.bytes) for m in video.media] == [
        ("video", f"https://video.bsky.app/watch/{ALICE}/{VID1}/playlist.m3u8", 5022310)
    ]
    deep = posts[f"bluesky:{DIEGO}/3lcjq3mzd5k2a"]
    assert deep.thread_id == img.id and deep.reply_to == reply.id and deep.lang == "pt-BR"

    bad_json = items[2]
    assert isinstance(bad_json, BadRecord) and bad_json.source == "jetstream"
    assert bad_json.raw == J_MALFORMED.encode()
    bad_time = items[3]
    assert isinstance(bad_time, BadRecord) and "timezone" in bad_time.reason
    assert bad_time.position == str(J_NAIVE_TIME["time_us"])
    assert json.loads(bad_time.raw) == J_NAIVE_TIME

    # Non-post traffic was seen and skipped, not lost without trace.
    assert client.skipped["identity"] >= 1 and client.skipped["account"] >= 1 and client.skipped["delete"] >= 1
    assert client.skipped["duplicate"] >= 4  # the rewound replay


def test_jetstream_keyword_and_language_filters() -> None:
    async def main(keywords: list[str], languages: list[str], last: str) -> list[ConnectorEvent]:
        fake = FakeJetstream(drop_after_phase1=False)
        async with serve(fake.handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            stop = asyncio.Event()
            cfg = JetstreamConfig(
                url=f"ws://127.0.0.1:{port}/subscribe",
                stop=stop,
                backoff=FAST,
                keywords=keywords,
                languages=languages,
            )
            return await collect(
                stream_jetstream(cfg),
                stop,
                lambda items: any(isinstance(i, Post) and i.id.endswith(last) for i in items),
            )

    items = run(main(["CoFFee", "waves"], [], "3lcjq4a2vqs2n"))
    texts = [i.text for i in items if isinstance(i, Post)]
    assert texts == [
        "Morning coffee at the harbour, finally some sun ☀️",
        "Look at these waves. Worth the cold coffee.",
        "COFFEE prices are up again. Not thrilled.",
    ]
    assert sum(isinstance(i, BadRecord) for i in items) == 2  # filters never hide bad input

    items = run(main([], ["pt"], "3lcjq3mzd5k2a"))
    assert [i.id for i in items if isinstance(i, Post)] == [f"bluesky:{DIEGO}/3lcjq3mzd5k2a"]


def test_jetstream_client_side_collection_filter_and_start_cursor() -> None:
    client = JetstreamClient(JetstreamConfig(wanted_collections=["app.bsky.feed.*"], cursor=T0))
    assert client.resume_cursor() == T0
    assert client.handle_frame(json.dumps(J_LIKE)) is None and client.skipped == {"not a post": 1}
    client = JetstreamClient(JetstreamConfig(wanted_collections=["app.bsky.graph.follow"]))
    assert client.handle_frame(json.dumps(J_POST_IMAGES)) is None and client.skipped == {"collection": 1}
    assert client.cursor == J_POST_IMAGES["time_us"]


def test_jetstream_gives_up_after_reconnect_budget() -> None:
    port = free_port()  # nothing listens here
    cfg = JetstreamConfig(
        url=f"ws://127.0.0.1:{port}/subscribe",
        backoff=BackoffConfig(initial_s=0.01, max_s=0.02, max_reconnects=2),
    )

    async def main() -> None:
        async for _ in stream_jetstream(cfg):
            pass

    with pytest.raises(ConnectorError, match="gave up after 2 reconnects"):
        run(main())


def test_jetstream_refused_handshake_is_not_retried() -> None:
    calls: list[str] = []

    def refuse(conn: ServerConnection, request: Request) -> Response:
        calls.append(request.path)
        return Response(403, "Forbidden", Headers(), b"forbidden\n")

    async def main() -> None:
        async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=refuse) as server:
            port = server.sockets[0].getsockname()[1]
            async for _ in stream_jetstream(JetstreamConfig(url=f"ws://127.0.0.1:{port}/subscribe", backoff=FAST)):
                pass

    with pytest.raises(ConnectorError, match="HTTP 403"):
        run(main())
    assert len(calls) == 1


# ================================================================================================
# Mastodon
# ================================================================================================

TOKEN = "zX9q-test-user-token-4f1c"
HOST = "fedi.example"  # what base_url's host would be; the fake listens on 127.0.0.1


def _account(aid: str, username: str, domain: str | None) -> dict[str, Any]:
    acct = f"{username}@{domain}" if domain else username
    home = f"https://{domain or 'fedi.example'}"
    return {
        "id": aid,
        "username": username,
        "acct": acct,
        "display_name": username.title(),
        "locked": False,
        "bot": False,
        "discoverable": True,
        "group": False,
        "created_at": "2023-02-11T00:00:00.000Z",
        "note": "<p>coffee, trains, bad puns</p>",
        "url": f"{home}/@{username}",
        "avatar": f"{home}/avatars/original/missing.png",
        "avatar_static": f"{home}/avatars/original/missing.png",
        "header": f"{home}/headers/original/missing.png",
        "header_static": f"{home}/headers/original/missing.png",
        "followers_count": 88,
        "following_count": 120,
        "statuses_count": 1402,
        "last_status_at": "2024-12-05",
        "emojis": [],
        "fields": [],
    }


ACC_LOCAL = _account("109301844201157", "marisol", None)
ACC_REMOTE = _account("110522937466001", "tomek", "social.example.org")


def _status(
    sid: str,
    created: str,
    html: str,
    account: dict[str, Any],
    lang: str | None = "en",
    reply_to: str | None = None,
    media: list[dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    edited_at: str | None = None,
) -> dict[str, Any]:
    domain = account["acct"].split("@")[1] if "@" in account["acct"] else "fedi.example"
    return {
        "id": sid,
        "created_at": created,
        "in_reply_to_id": reply_to,
        "in_reply_to_account_id": ACC_LOCAL["id"] if reply_to else None,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": "public",
        "language": lang,
        "uri": f"https://{domain}/users/{account['username']}/statuses/{sid}",
        "url": f"https://{domain}/@{account['username']}/{sid}",
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": edited_at,
        "content": html,
        "reblog": None,
        "application": {"name": "Web", "website": None},
        "account": account,
        "media_attachments": media or [],
        "mentions": [],
        "tags": [{"name": t, "url": f"https://fedi.example/tags/{t}"} for t in (tags or [])],
        "emojis": [],
        "card": None,
        "poll": None,
    }


def _attachment(aid: str, kind: str, url: str, remote_url: str | None = None) -> dict[str, Any]:
    return {
        "id": aid,
        "type": kind,
        "url": url,
        "preview_url": url.rsplit(".", 1)[0] + "_small.jpg",
        "remote_url": remote_url,
        "preview_remote_url": None,
        "text_url": None,
        "meta": {"original": {"width": 1280, "height": 720, "size": "1280x720", "aspect": 1.7778}},
        "description": "a description",
        "blurhash": "UFG[y]~q%MRj-;M{RjWB_3t7IUWBxuofofWB",
    }


S1 = _status(
    "113601449011422001",
    "2024-12-05T14:10:02.118Z",
    '<p>New oat-milk latte at <a href="https://fedi.example/tags/cafeluna" class="mention hashtag" rel="tag">'
    "#<span>CafeLuna</span></a> is <strong>fantastic</strong> &amp; cheap.</p><p>Line one<br />line two</p>"
    '<p><a href="https://cafeluna.example/menu" rel="nofollow noopener" target="_blank">'
    '<span class="invisible">https://</span><span class="">cafeluna.example/menu</span>'
    '<span class="invisible"></span></a></p>',
    ACC_LOCAL,
    tags=["cafeluna"],
    media=[
        _attachment(
            "113601448990001",
            "image",
            "https://files.fedi.example/media_attachments/files/113/601/448/990/001/original/a1b2c3.jpeg",
        )
    ],
)
S2 = _status(
    "113601449877410002",
    "2024-12-05T14:10:15.904Z",
    '<p><span class="h-card"><a href="https://fedi.example/@marisol" class="u-url mention">@<span>marisol'
    "</span></a></span> the queue there is awful though 😩</p>",
    ACC_REMOTE,
    reply_to=S1["id"],
    media=[
        _attachment(
            "113601449800002",
            "gifv",
            "https://files.fedi.example/cache/media_attachments/files/113/601/449/800/002/original/q.mp4",
            remote_url="https://social.example.org/system/media/q.mp4",
        ),
        _attachment(
            "113601449800003",
            "audio",
            "https://files.fedi.example/cache/media_attachments/files/113/601/449/800/003/original/v.mp3",
        ),
        _attachment("113601449800004", "unknown", "https://social.example.org/system/media/x.bin"),
    ],
)
S1_EDIT = {**S1, "content": "<p>edited: still fantastic</p>", "edited_at": "2024-12-05T14:11:00.000Z"}
S3 = _status("113601452201633003", "2024-12-05T14:10:51.000Z", "<p>Reply in the gap</p>", ACC_LOCAL, reply_to=S2["id"])
S4 = _status(
    "113601453712044004",
    "2024-12-05T14:11:14.500Z",
    "<p>Second post while you were away</p>",
    ACC_REMOTE,
    lang="de",
)
S4B = _status(
    "113601454003155005",
    "2024-12-05T14:11:19.000Z",
    "<p>Third post while you were away</p>",
    ACC_LOCAL,
    lang=None,
)
S5 = _status("113601460551266006", "2024-12-05T14:12:59.000Z", "<p>Back to live. Espresso time.</p>", ACC_REMOTE)


def sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class FakeMastodon:
    """A Mastodon instance: REST API on one port, the streaming server on another (as on big instances)."""

    def __init__(self, scripts: list[list[Any]], timeline: list[dict[str, Any]]) -> None:
        self.scripts = scripts  # per stream connection: bytes to send, an asyncio.Event to await, or "drop"
        self.timeline = timeline
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []
        self.stream_connections = 0
        self.api_port = 0
        self.stream_port = 0
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def __aenter__(self) -> FakeMastodon:
        api = await asyncio.start_server(lambda r, w: self._serve(r, w, "api"), "127.0.0.1", 0)
        stream = await asyncio.start_server(lambda r, w: self._serve(r, w, "stream"), "127.0.0.1", 0)
        self._servers = [api, stream]
        self.api_port = api.sockets[0].getsockname()[1]
        self.stream_port = stream.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let every handler finish by itself (cancelling them makes 3.11's asyncio log noise).
        self._closing = True
        for s in self._servers:
            s.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)

    @staticmethod
    async def _respond(w: asyncio.StreamWriter, status: int, reason: str, body: Any) -> None:
        data = json.dumps(body).encode()
        w.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await w.drain()
        w.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, which: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
            return
        line, *header_lines = head.split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        self.requests.append((which, parts.path, query, headers))
        if which == "api" and parts.path == "/api/v2/instance":
            return await self._respond(
                w,
                200,
                "OK",
                {
                    "domain": HOST,
                    "title": "Fedi Example",
                    "version": "4.3.2",
                    "configuration": {
                        "urls": {"streaming": f"ws://127.0.0.1:{self.stream_port}"},
                        "statuses": {"max_characters": 500, "max_media_attachments": 4},
                    },
                },
            )
        if which == "api" and (
            parts.path == "/api/v1/timelines/public" or parts.path.startswith("/api/v1/timelines/tag/")
        ):
            return await self._respond(w, 200, "OK", self._page(query))
        if which == "stream" and parts.path.startswith("/api/v1/streaming/"):
            if headers.get("authorization") != f"Bearer {TOKEN}":
                return await self._respond(w, 401, "Unauthorized", {"error": "Missing access token"})
            return await self._stream(r, w)
        return await self._respond(w, 404, "Not Found", {"error": "Record not found"})

    def _page(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        key = lambda s: (len(s), s)  # noqa: E731
        since = query.get("since_id", [None])[0]
        max_id = query.get("max_id", [None])[0]
        limit = int(query.get("limit", ["20"])[0])
        rows = [
            s
            for s in self.timeline
            if (since is None or key(s["id"]) > key(since)) and (max_id is None or key(s["id"]) < key(max_id))
        ]
        return sorted(rows, key=lambda s: key(s["id"]), reverse=True)[:limit]

    async def _stream(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = self.stream_connections
        self.stream_connections += 1
        script = self.scripts[min(n, len(self.scripts) - 1)]
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: private, no-store\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )

        def chunk(data: bytes) -> None:
            w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        try:
            chunk(b":)\n")  # Mastodon greets a new SSE stream with this comment
            for step in script:
                if isinstance(step, bytes):
                    chunk(step)
                    await w.drain()
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                elif step == "drop":
                    w.transport.abort()  # mid-stream network drop: no terminating chunk
                    return
            while not self._closing and not r.at_eof():  # then heartbeats until the client leaves
                chunk(b":thump\n")
                await w.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            w.close()


def test_mastodon_stream_reconnect_backfill_and_mapping() -> None:
    caught_up = asyncio.Event()
    s2 = json.dumps(S2)
    phase1 = [
        sse("update", json.dumps(S1)),
        b":thump\n",
        b"event: upd",  # an event split across chunks, as TCP may deliver it
        f"ate\ndata: {s2[:40]}".encode(),
        f"{s2[40:]}\n\n".encode(),
        sse("delete", "113601440000000999"),
        sse("status.update", json.dumps(S1_EDIT)),
        sse("update", '{"id":"113601450000000777","created_at":"2024-12-05T14:10:3'),  # cut short
        caught_up,
        "drop",
    ]
    phase2 = [sse("update", json.dumps(S4)), sse("update", json.dumps(S5))]

    async def main() -> tuple[list[ConnectorEvent], FakeMastodon, MastodonClient]:
        async with FakeMastodon([phase1, phase2], timeline=[S1, S2, S3, S4, S4B]) as fake:
            stop = asyncio.Event()
            cfg = MastodonConfig(
                base_url=f"http://127.0.0.1:{fake.api_port}",
                access_token=TOKEN,
                backfill_limit=2,
                stop=stop,
                backoff=FAST,
            )
            client = MastodonClient(cfg)

            def until(items: list[ConnectorEvent]) -> bool:
                if any(isinstance(i, BadRecord) for i in items):
                    caught_up.set()
                return any(isinstance(i, Post) and i.id.endswith(S5["id"]) for i in items)

            items = await collect(client.events(), stop, until)
            return items, fake, client

    items, fake, client = run(main())
    host = f"127.0.0.1:{fake.api_port}"

    kinds = [(type(i).__name__, i.id if isinstance(i, Post) else i.reason[:12]) for i in items]
    assert kinds == [
        ("Post", f"mastodon:{host}/{S1['id']}"),
        ("Post", f"mastodon:{host}/{S2['id']}"),
        ("BadRecord", "invalid JSON"),
        ("Post", f"mastodon:{host}/{S3['id']}"),
        ("Post", f"mastodon:{host}/{S4['id']}"),
        ("Post", f"mastodon:{host}/{S4B['id']}"),
        ("Post", f"mastodon:{host}/{S5['id']}"),
    ]
    posts = _by_id(items)

    # Discovery: the stream went to the announced streaming host, with the bearer token.
    streams = [r for r in fake.requests if r[0] == "stream"]
    assert [r[1] for r in streams] == ["/api/v1/streaming/public", "/api/v1/streaming/public"]
    assert all(r[3]["authorization"] == f"Bearer {TOKEN}" for r in streams)
    assert client.streaming_base == f"http://127.0.0.1:{fake.stream_port}"
    # Backfill: since_id = newest id seen before the drop, paged back with max_id while pages were full.
    pages = [r[2] for r in fake.requests if r[1] == "/api/v1/timelines/public"]
    assert pages == [
        {"since_id": [S2["id"]], "limit": ["2"]},
        {"since_id": [S2["id"]], "limit": ["2"], "max_id": [S4["id"]]},
    ]
    assert client.connects == 2 and client.backfilled == 3 and client.last_id == S5["id"]

    p1 = posts[f"mastodon:{host}/{S1['id']}"]
    assert p1.platform == "mastodon"
    assert p1.author.id == f"mastodon:marisol@{host}" and p1.author.handle == f"marisol@{host}"
    assert (
        p1.text == "New oat-milk latte at #CafeLuna is fantastic & cheap.\n\nLine one\nline two\n\n"
        "https://cafeluna.example/menu"
    )
    assert p1.lang == "en" and p1.created_at == datetime(2024, 12, 5, 14, 10, 2, 118000, tzinfo=UTC)
    assert p1.thread_id == p1.id and p1.reply_to is None
    assert [(m.kind, m.uri, m.mime) for m in p1.media] == [("image", S1["media_attachments"][0]["url"], "image/jpeg")]
    assert p1.extra["uri"] == S1["uri"] and p1.extra["tags"] == "cafeluna"
    assert "backfill" not in p1.extra

    p2 = posts[f"mastodon:{host}/{S2['id']}"]
    assert p2.author.id == "mastodon:tomek@social.example.org"
    assert p2.text == "@marisol the queue there is awful though 😩"
    assert p2.reply_to == p1.id and p2.thread_id == p1.id
    assert [(m.kind, m.mime) for m in p2.media] == [("video", "video/mp4"), ("audio", "audio/mpeg")]

    p3 = posts[f"mastodon:{host}/{S3['id']}"]
    assert p3.extra["backfill"] is True
    assert p3.reply_to == p2.id and p3.thread_id == p1.id  # thread root carried down the chain
    assert posts[f"mastodon:{host}/{S4['id']}"].lang == "de"
    assert posts[f"mastodon:{host}/{S4B['id']}"].lang is None
    assert "backfill" not in posts[f"mastodon:{host}/{S5['id']}"].extra

    bad = items[2]
    assert isinstance(bad, BadRecord) and bad.source == "mastodon"
    assert bad.raw == b'{"id":"113601450000000777","created_at":"2024-12-05T14:10:3'
    assert client.skipped["delete"] == 1 and client.skipped["status.update"] == 1
    assert client.skipped["duplicate"] == 1  # S4 came by backfill and again on the stream


def test_mastodon_hashtag_stream_filters_and_backfill_path() -> None:
    caught_up = asyncio.Event()
    other = _status(
        "113601449500000010",
        "2024-12-05T14:10:20.000Z",
        "<p>Tea &gt; everything</p>",
        ACC_REMOTE,
        tags=["coffee"],
    )
    # `other` comes first so that it has been read (and its id noted) before S1 lets the server drop.
    phase1 = [sse("update", json.dumps(other)), sse("update", json.dumps(S1)), caught_up, "drop"]
    phase2 = [sse("update", json.dumps(S5))]

    async def main() -> tuple[list[ConnectorEvent], FakeMastodon]:
        async with FakeMastodon([phase1, phase2], timeline=[S1, other, S3, S4]) as fake:
            stop = asyncio.Event()
            cfg = MastodonConfig(
                base_url=f"http://127.0.0.1:{fake.api_port}",
                stream="hashtag:local",
                tag="#coffee",
                access_token=TOKEN,
                keywords=["LATTE", "espresso", "away"],
                languages=["en"],
                streaming_base_url=f"http://127.0.0.1:{fake.stream_port}",
                stop=stop,
                backoff=FAST,
            )

            def until(items: list[ConnectorEvent]) -> bool:
                caught_up.set()
                return any(i.id.endswith(S5["id"]) for i in items if isinstance(i, Post))

            return await collect(stream_mastodon(cfg), stop, until), fake

    items, fake = run(main())
    host = f"127.0.0.1:{fake.api_port}"
    # "Tea > everything" fails the keywords; S3 too; S4 is German ("de") so the language filter drops it.
    assert [i.id for i in items] == [f"mastodon:{host}/{S1['id']}", f"mastodon:{host}/{S5['id']}"]
    streams = [(r[1], r[2]) for r in fake.requests if r[0] == "stream"]
    assert streams == [("/api/v1/streaming/hashtag/local", {"tag": ["coffee"]})] * 2
    assert not any(r[1] == "/api/v2/instance" for r in fake.requests)  # configured, so not discovered
    backfills = [(r[1], r[2]) for r in fake.requests if r[1].startswith("/api/v1/timelines/")]
    assert backfills == [
        ("/api/v1/timelines/tag/coffee", {"local": ["true"], "since_id": [other["id"]], "limit": ["40"]})
    ]


def test_mastodon_unauthorized_is_not_retried() -> None:
    async def main() -> FakeMastodon:
        async with FakeMastodon([[]], timeline=[]) as fake:
            cfg = MastodonConfig(base_url=f"http://127.0.0.1:{fake.api_port}", access_token="wrong", backoff=FAST)
            with pytest.raises(ConnectorError, match="HTTP 401"):
                async for _ in stream_mastodon(cfg):
                    pass
            return fake

    fake = run(main())
    assert sum(r[0] == "stream" for r in fake.requests) == 1


def test_mastodon_gives_up_when_streaming_host_is_down() -> None:
    port = free_port()
    cfg = MastodonConfig(
        base_url=f"http://127.0.0.1:{port}",
        streaming_base_url=f"http://127.0.0.1:{port}",
        backoff=BackoffConfig(initial_s=0.01, max_s=0.02, max_reconnects=2),
    )

    async def main() -> None:
        async for _ in stream_mastodon(cfg):
            pass

    with pytest.raises(ConnectorError, match="gave up after 2 reconnects"):
        run(main())
