"""Turn a row of some file (CSV/JSONL) into a `Post` through a column mapping.

A mapping names, for each Post field, the column that holds it. `PRESETS["airline"]` is the
reference stream in the data directory's `airline-tweets/` (`VOXPOP_DATA_DIR`). A source whose
texts carry HTML entities (the airline CSV: Twitter escaped `&`, `<`, `>`) says so in its map,
and they are unescaped here, once, where the post enters: what is stored, scored, matched and
shown is the text as written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from models.text_normalise import unescape_entities
from pipelines.schemas import Author, Media, Post


class ColumnMap(BaseModel):
    """Which column holds what. Missing optional columns are simply absent from the Post."""

    id: str = "id"
    text: str = "text"
    author_id: str = "author"
    author_handle: str | None = None
    created_at: str = "created_at"
    platform: str = Field("file", description="constant platform name for the ids")
    lang: str | None = None
    thread_id: str | None = None
    reply_to: str | None = None
    image: str | None = Field(None, description="column with an image path or URL")
    audio: str | None = None
    video: str | None = None
    extra: list[str] = Field(default_factory=list, description="columns copied into Post.extra")
    media_root: Path | None = Field(None, description="relative media paths resolve against this")
    html_entities: bool = Field(
        False, description="the text column carries HTML entities (`&amp;`, `&lt;`): unescaped once here"
    )


PRESETS: dict[str, ColumnMap] = {
    "airline": ColumnMap(
        id="tweet_id",
        text="text",
        author_id="user",
        author_handle="user",
        created_at="created_at",
        platform="twitter",
        extra=["airline", "airline_sentiment", "negativereason", "ts_precision"],
        html_entities=True,  # Twitter's API escaped &, < and > in tweet texts
    ),
}


class RecordError(ValueError):
    """A row that cannot become a Post; the message says why and goes into the DLQ header."""


def _parse_time(v: Any) -> datetime:
    if isinstance(v, int | float):
        return datetime.fromtimestamp(float(v), UTC)
    s = str(v).strip()
    if not s:
        raise RecordError("created_at is empty")
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as e:
        raise RecordError(f"created_at {s!r} is not ISO 8601: {e}") from None


def row_to_post(row: dict[str, Any], cmap: ColumnMap) -> Post:
    """Build and validate a Post; raises RecordError / pydantic.ValidationError with the reason."""

    def col(name: str | None) -> Any:
        if name is None:
            return None
        v = row.get(name)
        return None if v == "" else v

    native = col(cmap.id)
    if native is None:
        raise RecordError(f"missing id column {cmap.id!r}")
    author = col(cmap.author_id)
    if author is None:
        raise RecordError(f"missing author column {cmap.author_id!r}")
    platform = cmap.platform.lower()
    media = []
    for kind, c in (("image", cmap.image), ("audio", cmap.audio), ("video", cmap.video)):
        uri = col(c)
        if uri:
            p = Path(str(uri))
            if cmap.media_root and not p.is_absolute() and "://" not in str(uri):
                p = cmap.media_root / p
            media.append(Media(kind=kind, uri=str(p) if "://" not in str(uri) else str(uri)))
    text = str(col(cmap.text) or "")
    extra = {k: row.get(k) if row.get(k) != "" else None for k in cmap.extra if k in row}
    return Post(
        id=f"{platform}:{native}",
        platform=platform,
        author=Author(id=f"{platform}:{author}", handle=col(cmap.author_handle)),
        text=unescape_entities(text) if cmap.html_entities else text,
        lang=col(cmap.lang),
        created_at=_parse_time(col(cmap.created_at)),
        thread_id=col(cmap.thread_id),
        reply_to=col(cmap.reply_to),
        media=media,
        extra=extra,
    )


def read_rows(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None, str | None]]:
    """Yield (line number, raw bytes, row or None, error or None) from a CSV or JSONL file."""
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        with path.open("rb") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("a JSONL line must be an object")
                    yield i, line.rstrip(b"\n"), row, None
                except ValueError as e:
                    yield i, line.rstrip(b"\n"), None, f"malformed JSON: {e}"
    else:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader, 2):
                raw = json.dumps(row, ensure_ascii=False).encode()
                if None in row:  # more fields than headers
                    yield i, raw, None, "malformed CSV row: more fields than the header has"
                else:
                    yield i, raw, row, None
