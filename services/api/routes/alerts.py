"""Alert firings (what the trends app decided) and their notifications and webhook deliveries."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger

from services.alerts.manage import resend_dead
from services.alerts.policy import redact_url
from services.alerts.why import stored_why, with_links
from services.api import schemas as S
from services.api.deps import IdQuery, Reader, State, Writer
from services.api.errors import invalid

router = APIRouter(prefix="/api", tags=["alerts"])
FIRING_SQL = """SELECT f.*, w.name AS watch_name, o.outcome AS notify_outcome FROM alert_firings f
LEFT JOIN watches w ON w.id = f.watch_id LEFT JOIN alert_outbox o ON o.firing_id = f.id"""


@router.get("/alerts", response_model=S.FiringPage, responses={400: {"model": S.ErrorOut}})
def list_alerts(
    st: State,
    _: Reader,
    watch_id: IdQuery = None,
    rule_id: IdQuery = None,
    status: Annotated[Literal["firing", "resolved"] | None, Query()] = None,
    severity: Annotated[S.Severity | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="window_end >= since")] = None,
    until: Annotated[datetime | None, Query(description="window_end < until")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^\d+$")] = None,
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` is the last id seen."""
    for t in (since, until):
        if t is not None and t.tzinfo is None:
            raise HTTPException(400, "timestamps must carry a timezone (ISO 8601 with offset or Z)")
    where: list[str] = []
    p: dict[str, Any] = {"lim": limit + 1}
    for col, v in (("f.watch_id", watch_id), ("f.rule_id", rule_id), ("f.status", status), ("f.severity", severity)):
        if v is not None:
            key = col.split(".")[1]
            where.append(f"{col} = :{key}")
            p[key] = v
    if since:
        where.append("f.window_end >= :since")
        p["since"] = since
    if until:
        where.append("f.window_end < :until")
        p["until"] = until
    if cursor:
        where.append("f.id < :cursor")
        p["cursor"] = min(int(cursor), 2**63 - 1)
    sql = f"{FIRING_SQL} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY f.id DESC LIMIT :lim"
    with st.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(sql), p).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": str(rows[-1]["id"]) if more and rows else None}


@router.get("/alerts/{firing_id}", response_model=S.FiringDetail, responses={404: {"model": S.ErrorOut}})
def get_alert(firing_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], st: State, _: Reader) -> dict[str, Any]:
    """One firing with its why (computed and kept on first view, as the webhook does), every
    notification made for it and each delivery attempt."""
    with st.engine.begin() as conn:
        row = conn.execute(text(f"{FIRING_SQL} WHERE f.id = :id"), {"id": firing_id}).mappings().first()
        if row is None:
            raise HTTPException(404, f"alert {firing_id} not found")
        f: dict[str, Any] = {**row, "why": with_links(stored_why(conn, dict(row)), st.settings.alerts.public_url())}
        notes = [
            dict(r)
            for r in conn.execute(
                text(
                    "SELECT n.*, e.name AS endpoint_name FROM notifications n LEFT JOIN webhook_endpoints e "
                    "ON e.id = n.endpoint_id WHERE n.firing_id = :id ORDER BY n.id"
                ),
                {"id": firing_id},
            ).mappings()
        ]
        dels: dict[int, list[dict[str, Any]]] = defaultdict(list)
        if notes:
            for d in conn.execute(
                text(
                    "SELECT * FROM webhook_deliveries WHERE notification_id = ANY(:ids) "
                    "ORDER BY notification_id, attempt"
                ).bindparams(bindparam("ids", type_=ARRAY(BigInteger))),
                {"ids": [n["id"] for n in notes]},
            ).mappings():
                dels[d["notification_id"]].append(dict(d))
    return {**f, "notifications": [{**n, "deliveries": dels.get(n["id"], [])} for n in notes]}


@router.get("/deliveries", response_model=list[S.DeliveryOut])
def list_deliveries(
    st: State,
    who: Reader,
    outcome: Annotated[Literal["ok", "retry", "dead", "blocked"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Newest webhook delivery attempts (e.g. ``outcome=dead`` for the dead-letter state); URLs whole to admins."""
    where = "WHERE outcome = :o" if outcome else ""
    with st.engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                text(f"SELECT * FROM webhook_deliveries {where} ORDER BY id DESC LIMIT :lim"),
                {"o": outcome, "lim": limit},
            ).mappings()
        ]
    if not who.allows("admin"):
        for r in rows:
            r["url"] = redact_url(r["url"])
    return rows


@router.post("/notifications/resend", response_model=S.Resent)
def resend_notifications(st: State, _: Writer, body: S.ResendIn) -> dict[str, Any]:
    """Queue dead webhook notifications again: by id, by endpoint, or all (same body and webhook-id)."""
    if body.ids is None and body.endpoint_id is None and not body.all:
        raise invalid("name ids, endpoint_id, or all=true")
    return {"queued": resend_dead(st.engine, body.ids, body.endpoint_id)}
