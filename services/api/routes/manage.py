"""CRUD for watches, alert rules, silences, webhook endpoints and API keys."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import Executable, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from pipelines.trends.rules import Rule
from services.alerts.policy import redact_url
from services.api import keys as key_store
from services.api import schemas as S
from services.api.deps import Admin, AppState, IdPath, IdQuery, Reader, State, Writer
from services.api.errors import invalid
from services.api.keys import Principal
from services.storage.alert_models import AlertRule, Silence, WebhookEndpoint
from services.storage.models import Watch

router = APIRouter(prefix="/api")
NOT_FOUND: S.Responses = {404: {"model": S.ErrorOut, "description": "no such object"}}
CONFLICT: S.Responses = {409: {"model": S.ErrorOut, "description": "the name is taken"}}
#: the tables these routes read one row of by id
Table = type[Watch] | type[AlertRule] | type[Silence] | type[WebhookEndpoint]


def _one(st: AppState, table: Table, obj_id: int, what: str) -> dict[str, Any]:
    with st.engine.connect() as conn:
        r = conn.execute(select(table).where(table.id == obj_id)).mappings().first()
    if r is None:
        raise HTTPException(404, f"{what} {obj_id} not found")
    return dict(r)


def _write(st: AppState, stmt: Executable, what: str) -> dict[str, Any]:
    """Run an INSERT/UPDATE ... RETURNING; the row it returned (404 if an UPDATE found none)."""
    try:
        with st.engine.begin() as conn:
            r = conn.execute(stmt).mappings().first()
    except IntegrityError as e:
        if "unique" in str(e.orig).lower() or "duplicate" in str(e.orig).lower():
            raise HTTPException(409, f"a {what} with that name already exists") from None
        raise HTTPException(409, f"{what} conflicts with existing data: {e.orig}") from None
    if r is None:  # an UPDATE whose row was deleted after the caller's existence check
        raise HTTPException(404, f"{what} not found")
    return dict(r)


def _watch_exists(st: AppState, watch_id: int | None) -> None:
    if watch_id is not None:
        _one(st, Watch, watch_id, "watch")


# --- watches ------------------------------------------------------------------------------------
@router.get("/watches", response_model=list[S.WatchOut], tags=["watches"])
def list_watches(st: State, _: Reader, active: bool | None = None) -> list[dict[str, Any]]:
    q = select(Watch).order_by(Watch.id)
    if active is not None:
        q = q.where(Watch.active.is_(active))
    with st.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


@router.post("/watches", response_model=S.WatchOut, status_code=201, tags=["watches"], responses=CONFLICT)
def create_watch(body: S.WatchIn, st: State, _: Writer) -> dict[str, Any]:
    return _write(st, insert(Watch).values(body.model_dump()).returning(*Watch.__table__.c), "watch")


@router.get("/watches/{watch_id}", response_model=S.WatchOut, tags=["watches"], responses=NOT_FOUND)
def get_watch(watch_id: IdPath, st: State, _: Reader) -> dict[str, Any]:
    return _one(st, Watch, watch_id, "watch")


@router.patch("/watches/{watch_id}", response_model=S.WatchOut, tags=["watches"], responses=NOT_FOUND | CONFLICT)
def patch_watch(watch_id: IdPath, body: S.WatchPatch, st: State, _: Writer) -> dict[str, Any]:
    cur = _one(st, Watch, watch_id, "watch")
    values = body.model_dump(exclude_unset=True)
    merged = {k: cur[k] for k in ("name", "kind", "keywords", "handles", "hashtags", "languages", "active")}
    merged.update({k: v for k, v in values.items() if v is not None})
    try:
        S.WatchIn(**merged)
    except ValueError as e:
        raise invalid(str(e).split("\n", 1)[-1].strip()) from None
    if not values:
        return cur
    return _write(
        st,
        update(Watch)
        .where(Watch.id == watch_id)
        .values(**{k: merged[k] for k in values})
        .returning(*Watch.__table__.c),
        "watch",
    )


@router.delete("/watches/{watch_id}", status_code=204, tags=["watches"], responses=NOT_FOUND)
def delete_watch(watch_id: IdPath, st: State, _: Writer) -> Response:
    """Deletes the watch and its post matches; set ``active=false`` instead to keep its history."""
    _one(st, Watch, watch_id, "watch")
    with st.engine.begin() as conn:
        conn.execute(delete(Watch).where(Watch.id == watch_id))
    return Response(status_code=204)


# --- alert rules ----------------------------------------------------------------------------------
def _window_sizes() -> list[str]:
    from services.config import get_settings

    return list(get_settings().trends.windows)


def _check_rule(values: dict[str, Any]) -> None:
    sizes = _window_sizes()
    if values.get("window_size") not in sizes:
        raise invalid(f"window_size must be one the trends app computes: {sizes}")
    rule = Rule.from_row({"id": 0, **values})
    try:
        rule.validate()
    except ValueError as e:
        raise invalid(str(e)) from None


def _rule_out(st: AppState, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with st.engine.connect() as conn:
        firing = {r[0] for r in conn.execute(text("SELECT DISTINCT rule_id FROM alert_rule_state WHERE firing"))}
    return [{**r, "firing": r["id"] in firing} for r in rows]


@router.get("/rules", response_model=list[S.RuleOut], tags=["rules"])
def list_rules(st: State, _: Reader, watch_id: IdQuery = None) -> list[dict[str, Any]]:
    q = select(AlertRule).order_by(AlertRule.id)
    if watch_id is not None:
        q = q.where((AlertRule.watch_id == watch_id) | AlertRule.watch_id.is_(None))
    with st.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    return _rule_out(st, rows)


@router.post(
    "/rules",
    response_model=S.RuleOut,
    status_code=201,
    tags=["rules"],
    responses=CONFLICT | {404: {"model": S.ErrorOut}},
)
def create_rule(body: S.RuleIn, st: State, _: Writer) -> dict[str, Any]:
    values = body.model_dump()
    _watch_exists(st, body.watch_id)
    _check_rule(values)
    row = _write(st, insert(AlertRule).values(values).returning(*AlertRule.__table__.c), "rule")
    return _rule_out(st, [row])[0]


@router.get("/rules/{rule_id}", response_model=S.RuleOut, tags=["rules"], responses=NOT_FOUND)
def get_rule(rule_id: IdPath, st: State, _: Reader) -> dict[str, Any]:
    return _rule_out(st, [_one(st, AlertRule, rule_id, "rule")])[0]


#: Rule fields a patch may not set to null: every field of a new rule whose default is not None.
NOT_NULL_RULE_FIELDS = tuple(k for k, f in S.RuleIn.model_fields.items() if f.default is not None)


@router.patch("/rules/{rule_id}", response_model=S.RuleOut, tags=["rules"], responses=NOT_FOUND | CONFLICT)
def patch_rule(rule_id: IdPath, body: S.RulePatch, st: State, _: Writer) -> dict[str, Any]:
    cur = _one(st, AlertRule, rule_id, "rule")
    values = body.model_dump(exclude_unset=True)
    if "watch_id" in values:
        _watch_exists(st, values["watch_id"])
    for k in NOT_NULL_RULE_FIELDS:
        if k in values and values[k] is None:
            raise invalid(f"{k} cannot be null")
    merged = {**cur, **values}
    _check_rule({k: v for k, v in merged.items() if k not in ("id", "created_at")})
    if not values:
        return _rule_out(st, [cur])[0]
    row = _write(
        st, update(AlertRule).where(AlertRule.id == rule_id).values(**values).returning(*AlertRule.__table__.c), "rule"
    )
    return _rule_out(st, [row])[0]


@router.delete("/rules/{rule_id}", status_code=204, tags=["rules"], responses=NOT_FOUND)
def delete_rule(rule_id: IdPath, st: State, _: Writer) -> Response:
    _one(st, AlertRule, rule_id, "rule")
    with st.engine.begin() as conn:
        conn.execute(delete(AlertRule).where(AlertRule.id == rule_id))
    return Response(status_code=204)


# --- silences -------------------------------------------------------------------------------------
def _silence_out(r: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {**r, "active": r["expired_at"] is None and r["starts_at"] <= now < r["ends_at"]}


@router.get("/silences", response_model=list[S.SilenceOut], tags=["silences"])
def list_silences(st: State, _: Reader, active: bool | None = None) -> list[dict[str, Any]]:
    with st.engine.connect() as conn:
        rows = [_silence_out(dict(r)) for r in conn.execute(select(Silence).order_by(Silence.id.desc())).mappings()]
    return [r for r in rows if active is None or r["active"] == active]


@router.post(
    "/silences", response_model=S.SilenceOut, status_code=201, tags=["silences"], responses={404: {"model": S.ErrorOut}}
)
def create_silence(body: S.SilenceIn, st: State, who: Writer) -> dict[str, Any]:
    values = body.model_dump()
    values["starts_at"] = values["starts_at"] or datetime.now(UTC)
    if values["ends_at"] <= values["starts_at"]:
        raise invalid("ends_at must be after starts_at")
    _watch_exists(st, body.watch_id)
    if body.rule_id is not None:
        _one(st, AlertRule, body.rule_id, "rule")
    values["created_by"] = values["created_by"] or who.name
    values["suppressed_count"] = 0
    return _silence_out(_write(st, insert(Silence).values(values).returning(*Silence.__table__.c), "silence"))


@router.patch("/silences/{silence_id}", response_model=S.SilenceOut, tags=["silences"], responses=NOT_FOUND)
def patch_silence(silence_id: IdPath, body: S.SilencePatch, st: State, _: Writer) -> dict[str, Any]:
    cur = _one(st, Silence, silence_id, "silence")
    values = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "ends_at" in values and values["ends_at"] <= cur["starts_at"]:
        raise invalid("ends_at must be after starts_at")
    if not values:
        return _silence_out(cur)
    return _silence_out(
        _write(
            st,
            update(Silence).where(Silence.id == silence_id).values(**values).returning(*Silence.__table__.c),
            "silence",
        )
    )


@router.delete("/silences/{silence_id}", response_model=S.SilenceOut, tags=["silences"], responses=NOT_FOUND)
def expire_silence(silence_id: IdPath, st: State, _: Writer) -> dict[str, Any]:
    """Expire now (kept for the record, like Alertmanager)."""
    cur = _one(st, Silence, silence_id, "silence")
    now = datetime.now(UTC)
    values = {"expired_at": now, "ends_at": min(cur["ends_at"], max(now, cur["starts_at"]))}
    if cur["expired_at"] is not None:
        return _silence_out(cur)
    return _silence_out(
        _write(
            st,
            update(Silence).where(Silence.id == silence_id).values(**values).returning(*Silence.__table__.c),
            "silence",
        )
    )


# --- webhook endpoints ----------------------------------------------------------------------------
def _check_url(url: str) -> None:
    """The alerts dispatcher's allow/deny policy, applied at registration too (clear 422, not a dead letter)."""
    from services.alerts.policy import PolicyError, UrlPolicy

    try:
        UrlPolicy.configured().check(url)
    except (PolicyError, ValueError) as e:
        raise invalid(f"webhook URL refused: {e}") from None


def _hook_out(r: dict[str, Any], who: Principal | None = None) -> dict[str, Any]:
    """An endpoint as shown: never its secret; its URL in full only to admin keys (URLs carry tokens)."""
    out = {**{k: v for k, v in r.items() if k != "secret"}, "secret_hint": r["secret"][:10] + "..."}
    if who is not None and not who.allows("admin"):
        out["url"] = redact_url(out["url"])
    return out


@router.get("/webhooks", response_model=list[S.WebhookOut], tags=["webhooks"])
def list_webhooks(st: State, who: Reader) -> list[dict[str, Any]]:
    """Endpoints; read and write keys see each URL as scheme://host/*** (admin keys see it whole)."""
    with st.engine.connect() as conn:
        return [
            _hook_out(dict(r), who)
            for r in conn.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.id)).mappings()
        ]


@router.post("/webhooks", response_model=S.WebhookCreated, status_code=201, tags=["webhooks"], responses=CONFLICT)
def create_webhook(body: S.WebhookIn, st: State, _: Admin) -> dict[str, Any]:
    """The signing secret is returned once, here."""
    values = body.model_dump()
    values["url"] = str(body.url)
    _check_url(values["url"])
    values["secret"] = body.secret or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    r = _write(st, insert(WebhookEndpoint).values(values).returning(*WebhookEndpoint.__table__.c), "webhook")
    return {**_hook_out(r), "secret": r["secret"]}


@router.get("/webhooks/{hook_id}", response_model=S.WebhookOut, tags=["webhooks"], responses=NOT_FOUND)
def get_webhook(hook_id: IdPath, st: State, who: Reader) -> dict[str, Any]:
    return _hook_out(_one(st, WebhookEndpoint, hook_id, "webhook"), who)


@router.patch("/webhooks/{hook_id}", response_model=S.WebhookOut, tags=["webhooks"], responses=NOT_FOUND | CONFLICT)
def patch_webhook(hook_id: IdPath, body: S.WebhookPatch, st: State, _: Admin) -> dict[str, Any]:
    cur = _one(st, WebhookEndpoint, hook_id, "webhook")
    values = {k: (str(v) if k == "url" else v) for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "url" in values:
        _check_url(values["url"])
    if not values:
        return _hook_out(cur)
    return _hook_out(
        _write(
            st,
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == hook_id)
            .values(**values)
            .returning(*WebhookEndpoint.__table__.c),
            "webhook",
        )
    )


@router.delete("/webhooks/{hook_id}", status_code=204, tags=["webhooks"], responses=NOT_FOUND)
def delete_webhook(hook_id: IdPath, st: State, _: Admin) -> Response:
    _one(st, WebhookEndpoint, hook_id, "webhook")
    with st.engine.begin() as conn:
        conn.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == hook_id))
    return Response(status_code=204)


# --- API keys -------------------------------------------------------------------------------------
@router.get("/keys", response_model=list[S.KeyOut], tags=["keys"])
def list_keys(st: State, _: Admin) -> list[dict[str, Any]]:
    return key_store.list_keys(st.engine)


@router.post("/keys", response_model=S.KeyCreated, status_code=201, tags=["keys"])
def create_key(body: S.KeyIn, st: State, _: Admin) -> dict[str, Any]:
    """The token is returned once, here; only its sha256 is stored."""
    row, token = key_store.create_key(st.engine, body.name, body.scope)
    return {**row, "token": token}


@router.delete("/keys/{key_id}", response_model=S.KeyOut, tags=["keys"], responses=NOT_FOUND)
def revoke_key(key_id: IdPath, st: State, _: Admin) -> dict[str, Any]:
    row = key_store.revoke_key(st.engine, key_id)
    if row is None:
        raise HTTPException(404, f"key {key_id} not found")
    st.forget(key_id)
    return row


@router.get("/whoami", response_model=S.KeyOut, tags=["keys"])
def whoami(st: State, who: Reader) -> dict[str, Any]:
    for k in key_store.list_keys(st.engine):
        if k["id"] == who.key_id:
            return k
    raise HTTPException(401, "API key no longer exists")
