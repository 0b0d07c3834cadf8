"""HTTP push endpoint: `POST /ingest/posts` takes a JSON array of Posts (or {"posts": [...]}).

Authenticated by an API key (`X-API-Key` or `Authorization: Bearer`); batch size and body size
are limited; each record is judged alone, so one bad record never sinks the batch: the answer
lists per-record errors by index, and those records also go to the DLQ.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path

from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pipelines.schemas import Post
from services.config import Settings
from services.ingest.gate import Incoming, IngestGate, validation_reason


class RecordError(BaseModel):
    index: int
    error: str


class PushResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    errors: list[RecordError]


def push_key(settings: Settings) -> str:
    """The configured key, or one generated once and kept (mode 0600) under the state dir."""
    if settings.push_api_key is not None:
        return settings.push_api_key.get_secret_value()
    path = Path(settings.state_dir) / "push_api_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def _incoming(rec: object) -> Incoming:
    """One pushed record, judged alone: a record that cannot even be re-encoded is still reported."""
    try:
        raw = json.dumps(rec, ensure_ascii=False).encode()
    except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800": not valid Unicode text
        raw = json.dumps(rec).encode()  # ASCII-escaped, so the DLQ keeps the record as sent
        return Incoming(raw=raw, error=f"record is not valid Unicode text: {e.reason}", source="http-push")
    except (RecursionError, ValueError) as e:
        return Incoming(raw=b"", error=f"record cannot be encoded as JSON: {e}", source="http-push")
    try:
        return Incoming(raw=raw, post=Post.model_validate(rec), source="http-push")
    except (ValidationError, ValueError) as e:
        return Incoming(raw=raw, error=validation_reason(e), source="http-push")


def create_push_app(settings: Settings, gate: IngestGate) -> FastAPI:
    app = FastAPI(title="VoxPop ingest push", version="1")
    key = push_key(settings)
    max_body = settings.push_max_batch * settings.max_record_bytes

    def check_key(x_api_key: str | None, authorization: str | None) -> None:
        given = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if not given:
            raise HTTPException(401, "missing API key: send it as X-API-Key or Authorization: Bearer")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise HTTPException(403, "API key not accepted")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ingest/posts", response_model=PushResponse)
    async def ingest_posts(
        request: Request, x_api_key: str | None = Header(None), authorization: str | None = Header(None)
    ) -> PushResponse:
        check_key(x_api_key, authorization)
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_body:
            raise HTTPException(413, f"body of {declared} bytes exceeds the limit of {max_body}")
        body = await request.body()
        if len(body) > max_body:
            raise HTTPException(413, f"body of {len(body)} bytes exceeds the limit of {max_body}")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise HTTPException(400, f"body is not JSON: {e}") from None
        except RecursionError:
            raise HTTPException(400, "body is not acceptable JSON: nested too deeply") from None
        records = doc.get("posts") if isinstance(doc, dict) else doc
        if not isinstance(records, list):
            raise HTTPException(400, 'send a JSON array of posts or an object {"posts": [...]}')
        if len(records) > settings.push_max_batch:
            raise HTTPException(413, f"{len(records)} posts exceed the batch limit {settings.push_max_batch}")
        items = [_incoming(rec) for rec in records]
        res = await run_in_threadpool(gate.submit, items)  # producer flush blocks
        return PushResponse(
            accepted=len(res.accepted),
            duplicates=len(res.duplicates),
            rejected=len(res.rejected),
            errors=[RecordError(index=i, error=err) for i, err in res.rejected],
        )

    return app
